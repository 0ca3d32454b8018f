// The WordPress block editor through Rempart, as shop staff use it: log in,
// open a new post (the editor loads a hundred scripts and REST calls at
// once), upload an image, insert it, publish, and check the published page;
// several times in a row. Every answer from the shop is recorded: none may
// be one of Rempart's refusals (429, 403).
//   node editor.mjs --url http://shop.test:PORT --rounds 3 --user admin --password PASS
import { chromium } from 'playwright-core';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const rounds = Number(args.rounds || 3);
const watchdog = setTimeout(() => { console.error('editor test: timed out'); process.exit(1); }, 170000);
const host = new URL(args.url).hostname;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    `--host-resolver-rules=MAP ${host} 127.0.0.1`],
});
// A 1×1 PNG.
const PNG = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==';
const refused = [];
let answers = 0;
const report = { ok: false, rounds: [], answers: 0 };
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('response', (r) => {
    if (!r.url().startsWith(args.url)) return;
    answers += 1;
    const reason = r.headers()['x-rempart-reason'];
    if (reason || r.status() === 429) refused.push(`${r.status()} ${reason || ''} ${r.request().method()} ${r.url()}`);
  });
  await page.goto(`${args.url}/wp-login.php`);
  await page.fill('#user_login', args.user);
  await page.fill('#user_pass', args.password);
  await Promise.all([page.waitForURL(/wp-admin/, { timeout: 30000 }), page.click('#wp-submit')]);
  for (let n = 1; n <= rounds; n += 1) {
    const started = Date.now();
    await page.goto(`${args.url}/wp-admin/post-new.php`, { waitUntil: 'networkidle', timeout: 60000 });
    await page.waitForFunction(() => window.wp && wp.data && wp.blocks && wp.apiFetch
      && wp.data.select('core/editor') && wp.data.select('core/editor').getCurrentPostId()
      && wp.blocks.getBlockType('core/image'), null, { timeout: 60000 });
    const media = await page.evaluate(async (b64) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const form = new FormData();
      form.append('file', new Blob([bytes], { type: 'image/png' }), 'photo.png');
      const m = await wp.apiFetch({ path: '/wp/v2/media', method: 'POST', body: form });
      return { id: m.id, url: m.source_url };
    }, PNG);
    const title = `Rempart editor test ${n} ${Date.now()}`;
    await page.evaluate(async ({ id, url, title }) => {
      wp.data.dispatch('core/editor').editPost({ title, status: 'publish' });
      wp.data.dispatch('core/block-editor').insertBlocks([
        wp.blocks.createBlock('core/paragraph', { content: 'Crème brûlée, été, <em>déjà</em> vu: a post published through Rempart.' }),
        wp.blocks.createBlock('core/image', { id, url, alt: 'photo' }),
      ]);
      await wp.data.dispatch('core/editor').savePost();
    }, { ...media, title });
    await page.waitForFunction(() => !wp.data.select('core/editor').isSavingPost()
      && wp.data.select('core/editor').getCurrentPost().status === 'publish', null, { timeout: 30000 });
    const link = await page.evaluate(() => wp.data.select('core/editor').getCurrentPost().link);
    const u = new URL(link);
    const probe = await context.request.get(link.replace(u.hostname, '127.0.0.1'), { maxRedirects: 0, headers: { Host: u.host } });
    if (probe.status() !== 200) {
      throw new Error(`round ${n}: ${link} answers ${probe.status()} (${JSON.stringify(probe.headers())})`);
    }
    const view = await context.newPage();
    const shown = await view.goto(link);
    const html = await view.content();
    await view.close();
    if (shown.status() !== 200 || !html.includes(title) || !html.includes(media.url)) {
      throw new Error(`round ${n}: the published post does not show its title and image (${shown.status()})`);
    }
    report.rounds.push({ n, ms: Date.now() - started, media: media.id });
  }
  report.answers = answers;
  if (refused.length) throw new Error(`Rempart refused the editor's requests:\n${refused.join('\n')}`);
  report.ok = true;
  console.log(JSON.stringify(report));
} catch (e) {
  console.error(`editor test failed: ${e.message}\n${JSON.stringify(report)}\n${refused.join('\n')}`);
  process.exitCode = 1;
} finally {
  await browser.close();
  clearTimeout(watchdog);
}
