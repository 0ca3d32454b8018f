// Headless Chromium loads a shop page through Rempart's TLS listener: the
// browser negotiates HTTP/2, and the page must come back whole (not
// Rempart's 403), over h2.
//   node shop_h2.mjs --url https://shop.test:PORT/product/x/ --port PORT --expect TEXT
import { chromium } from 'playwright-core';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const watchdog = setTimeout(() => { console.error('shop_h2 test: timed out'); process.exit(1); }, 60000);
const host = new URL(args.url).hostname;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--ignore-certificate-errors', `--host-resolver-rules=MAP ${host} 127.0.0.1`],
});
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  const response = await page.goto(args.url);
  const status = response.status();
  const protocol = await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
  const text = await page.evaluate(() => document.body ? document.body.innerText : '');
  if (status !== 200) throw new Error(`status ${status} (${response.headers()['x-rempart-reason'] || 'origin'})`);
  if (protocol !== 'h2') throw new Error(`negotiated ${protocol}, not h2`);
  if (!text.includes(args.expect)) throw new Error(`the page does not show ${args.expect}: ${text.slice(0, 200)}`);
  console.log(JSON.stringify({ ok: true, status, protocol }));
} catch (e) {
  console.error(`shop_h2 test failed: ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
  clearTimeout(watchdog);
}
