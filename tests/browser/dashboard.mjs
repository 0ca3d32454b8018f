// Headless-browser check of Rempart's admin dashboard (src/assets/dashboard.html).
//
//   node dashboard.mjs --url http://127.0.0.1:9090/ [--token TOKEN]
//                      [--screenshot target/dashboard.png] [--expect-ban 198.51.100.7]
//
// Drives Debian's Chromium (env CHROMIUM, default /usr/bin/chromium) through
// playwright-core. Prints one JSON line on stdout: {"ok":true,...} and exits 0,
// or {"ok":false,"step":...,"error":...} (plus a readable line on stderr) and exits 1.
// See README.md.

import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { chromium } from 'playwright-core';

const WATCHDOG_MS = 60_000;
const started = Date.now();

function usage(msg) {
  if (msg) process.stderr.write(`dashboard.mjs: ${msg}\n`);
  process.stderr.write(
    'usage: node dashboard.mjs --url URL [--token TOKEN] [--screenshot PATH] [--expect-ban IP]\n',
  );
  process.exit(2);
}

function parseArgs(argv) {
  const known = new Set(['url', 'token', 'screenshot', 'expect-ban']);
  const out = { token: '' };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    if (arg === '-h' || arg === '--help') usage();
    if (!arg.startsWith('--')) usage(`unexpected argument ${arg}`);
    arg = arg.slice(2);
    let value;
    const eq = arg.indexOf('=');
    if (eq >= 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    } else {
      value = argv[++i];
    }
    if (!known.has(arg)) usage(`unknown option --${arg}`);
    if (value === undefined) usage(`--${arg} needs a value`);
    out[arg] = value;
  }
  if (!out.url) usage('--url is required');
  return out;
}

const args = parseArgs(process.argv.slice(2));
const consoleErrors = [];
const pageErrors = [];
let browser = null;
let page = null;
let step = 'start';

function elapsed() {
  return Date.now() - started;
}

let failing = false;

async function fail(message, extra = {}) {
  // only the first failure speaks; later ones are its consequences (e.g. the closed browser)
  if (failing) return new Promise(() => {});
  failing = true;
  const summary = {
    ok: false,
    step,
    error: message,
    console_errors: consoleErrors,
    page_errors: pageErrors,
    elapsed_ms: elapsed(),
    ...extra,
  };
  process.stderr.write(`FAIL [${step}]: ${message}\n`);
  for (const e of consoleErrors) process.stderr.write(`  console error: ${e}\n`);
  for (const e of pageErrors) process.stderr.write(`  page error: ${e}\n`);
  // a picture of the failure helps more than any message
  if (page && args.screenshot) {
    const shot = args.screenshot.replace(/(\.png)?$/i, '.failure.png');
    try {
      mkdirSync(dirname(resolve(shot)), { recursive: true });
      await page.screenshot({ path: shot, fullPage: true, timeout: 5_000 });
      summary.failure_screenshot = shot;
      process.stderr.write(`  screenshot of the failure: ${shot}\n`);
    } catch {
      /* best effort */
    }
  }
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  await closeBrowser();
  process.exit(1);
}

async function closeBrowser() {
  if (!browser) return;
  const b = browser;
  browser = null;
  await Promise.race([b.close().catch(() => {}), new Promise((r) => setTimeout(r, 5_000))]);
}

const watchdog = setTimeout(() => {
  fail(`the whole run took over ${WATCHDOG_MS / 1000} s`).finally(() => process.exit(1));
  // if even closing hangs, leave anyway; playwright kills the browser on exit
  setTimeout(() => process.exit(1), 8_000).unref();
}, WATCHDOG_MS);

// Waits for `fn(arg)` in the page to return a truthy value; on timeout, fails with
// `what` and the page's own description of what it sees (from `describe`).
async function waitInPage(what, fn, arg, timeout, describe) {
  try {
    return await page.waitForFunction(fn, arg, { timeout, polling: 200 });
  } catch (e) {
    let seen = '';
    if (describe) {
      try {
        seen = await page.evaluate(describe, arg);
      } catch {
        /* the page may be gone */
      }
    }
    await fail(`${what} (waited ${timeout / 1000} s)${seen ? `; page shows: ${seen}` : ''}`);
  }
}

// Path data of the series drawn in a chart: non-empty, without NaN.
const chartLines = (name) => {
  const root = document.querySelector(`[data-chart="${name}"]`);
  if (!root) return [];
  return Array.from(root.querySelectorAll('path, polyline'))
    .map((n) => (n.tagName.toLowerCase() === 'polyline' ? n.getAttribute('points') : n.getAttribute('d')) || '')
    .filter((d) => d.trim() !== '' && !/NaN|undefined|Infinity/.test(d));
};

async function main() {
  step = '1 launch';
  try {
    browser = await chromium.launch({
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      args: [
        '--headless=new',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
      timeout: 20_000,
    });
  } catch (e) {
    await fail(`cannot start Chromium (${process.env.CHROMIUM || '/usr/bin/chromium'}): ${e.message}`);
  }
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.on('console', (msg) => {
    if (msg.type() === 'error') {
      const loc = msg.location();
      consoleErrors.push(`${msg.text()}${loc && loc.url ? ` (${loc.url}:${loc.lineNumber})` : ''}`);
    }
  });
  page.on('pageerror', (err) => pageErrors.push(String(err && err.stack ? err.stack : err)));

  step = '2 open';
  try {
    const resp = await page.goto(args.url, { waitUntil: 'domcontentloaded', timeout: 10_000 });
    if (!resp || !resp.ok()) {
      await fail(`GET ${args.url} answered ${resp ? resp.status() : 'nothing'}`);
    }
  } catch (e) {
    await fail(`cannot open ${args.url}: ${e.message}`);
  }

  step = '2 traffic shown';
  // (the page functions below are self-contained: no eval in the page, so a strict CSP is fine)
  await waitInPage(
    'the requests/s tile never showed a number > 0 with a drawn rps chart',
    () => {
      const text = document.querySelector('[data-kpi="rps"]')?.textContent || '';
      const v = parseFloat(text.replace(/[^0-9.eE+-]/g, ''));
      const root = document.querySelector('[data-chart="rps"]');
      const lines = root
        ? Array.from(root.querySelectorAll('path, polyline'))
            .map((n) => (n.tagName.toLowerCase() === 'polyline' ? n.getAttribute('points') : n.getAttribute('d')) || '')
            .filter((d) => d.trim() !== '' && !/NaN|undefined|Infinity/.test(d))
        : [];
      return v > 0 && lines.length > 0;
    },
    undefined,
    15_000,
    () => {
      const text = document.querySelector('[data-kpi="rps"]')?.textContent || '(no tile)';
      const n = document.querySelectorAll('[data-chart="rps"] path, [data-chart="rps"] polyline').length;
      const banner = document.querySelector('[data-testid="connection-banner"]');
      const b = banner && !banner.hidden ? `, banner "${banner.textContent.trim().replace(/\s+/g, ' ')}"` : '';
      return `requests/s "${text}", ${n} path/polyline element(s) in the rps chart${b}`;
    },
  );
  const rpsText = (await page.textContent('[data-kpi="rps"]')).trim();

  step = '3 latency chart';
  const latencyLines = (await page.evaluate(chartLines, 'latency')).length;
  if (latencyLines < 1) await fail('the latency chart has no line');

  step = '3 upstreams';
  const upstreamRows = await page.locator('[data-testid="upstreams"] tbody tr:not(.empty)').count();
  if (upstreamRows < 1) await fail('the upstreams table has no row');

  const ip = args['expect-ban'];
  const banRow = (want) =>
    Array.from(document.querySelectorAll('[data-testid="bans"] tbody tr')).some(
      (tr) => tr.getAttribute('data-ip') === want,
    );
  const bansSeen = () =>
    Array.from(document.querySelectorAll('[data-testid="bans"] tbody tr'))
      .map((tr) => tr.getAttribute('data-ip') || tr.textContent.trim())
      .join(', ') +
    ' / ' +
    (document.querySelector('[data-testid="bans-result"]')?.textContent || '');
  let unbanned = null;
  if (ip) {
    step = '3 bans';
    await waitInPage(`the bans table has no row for ${ip}`, banRow, ip, 5_000, bansSeen);

    step = '4 unban';
    await page.fill('[data-testid="token"]', args.token || '');
    const quoted = ip.replace(/\\/g, '\\\\').replace(/"/g, '\\"');
    try {
      await page.click(`[data-testid="bans"] button[data-action="unban"][data-ip="${quoted}"]`, { timeout: 5_000 });
    } catch (e) {
      await fail(`cannot click Unban for ${ip}: ${e.message.split('\n')[0]}`);
    }
    await waitInPage(
      `the ban of ${ip} is still listed after Unban`,
      (want) =>
        !Array.from(document.querySelectorAll('[data-testid="bans"] tbody tr')).some(
          (tr) => tr.getAttribute('data-ip') === want,
        ),
      ip,
      10_000,
      bansSeen,
    );
    unbanned = ip;
  } else if (args.token) {
    await page.fill('[data-testid="token"]', args.token);
  }

  step = '5 purge';
  await page.selectOption('[data-testid="purge-form"] select', 'all');
  await page.click('[data-testid="purge-form"] [type="submit"]');
  await waitInPage(
    'the purge result never said "purged"',
    () => /purged/i.test(document.querySelector('[data-testid="purge-result"]')?.textContent || ''),
    undefined,
    10_000,
    () => `purge result "${document.querySelector('[data-testid="purge-result"]')?.textContent || ''}"`,
  );
  const purgeText = (await page.textContent('[data-testid="purge-result"]')).trim();

  step = '6 screenshot';
  let screenshot = null;
  if (args.screenshot) {
    screenshot = args.screenshot;
    try {
      mkdirSync(dirname(resolve(screenshot)), { recursive: true });
      await page.screenshot({ path: screenshot, fullPage: true, timeout: 10_000 });
    } catch (e) {
      await fail(`cannot save the screenshot to ${screenshot}: ${e.message}`);
    }
  }

  step = '7 errors';
  if (consoleErrors.length || pageErrors.length) {
    await fail(`${consoleErrors.length} console error(s) and ${pageErrors.length} page error(s)`);
  }

  await closeBrowser();
  clearTimeout(watchdog);
  process.stdout.write(
    `${JSON.stringify({
      ok: true,
      url: args.url,
      rps: rpsText,
      latency_lines: latencyLines,
      upstreams: upstreamRows,
      unbanned,
      purge: purgeText,
      screenshot,
      elapsed_ms: elapsed(),
    })}\n`,
  );
  process.exit(0);
}

main().catch((e) => fail(`unexpected: ${e && e.stack ? e.stack : e}`));
