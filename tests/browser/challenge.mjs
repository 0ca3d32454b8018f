// Headless Chromium meets the proof-of-work challenge: it must solve it with
// JavaScript, get the pass cookie, and land on the shop page.
//   node challenge.mjs --url http://127.0.0.1:PORT/product/x/ --expect TEXT
import { chromium } from 'playwright-core';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const watchdog = setTimeout(() => { console.error('challenge test: timed out'); process.exit(1); }, 60000);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  const first = await page.goto(args.url);
  if (first.status() !== 403 || first.headers()['x-rempart-reason'] !== 'challenge') {
    throw new Error(`expected the challenge first, got ${first.status()} ${first.headers()['x-rempart-reason']}`);
  }
  // The page solves the work and posts; the browser follows the redirect.
  await page.waitForFunction((text) => document.body && document.body.innerText.includes(text), args.expect, { timeout: 30000 });
  const cookies = await context.cookies();
  const pass = cookies.find((c) => c.name === 'rempart_pass');
  if (!pass || !pass.httpOnly) throw new Error('no HttpOnly pass cookie after solving');
  if (errors.length) throw new Error(`page errors: ${errors.join('; ')}`);
  console.log(JSON.stringify({ ok: true, url: page.url() }));
} catch (e) {
  console.error(`challenge test failed: ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
  clearTimeout(watchdog);
}
