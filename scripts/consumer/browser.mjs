// Serves a built Vite app with cross-origin isolation and reads its result in headless Chromium.

import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { extname, join } from 'node:path';

const require = createRequire(import.meta.url);
const { chromium } = require(
  require.resolve('playwright-core', {
    paths: [process.cwd(), new URL('../../apps/playground', import.meta.url).pathname],
  }),
);
const root = process.argv[2];
const types = {
  '.html': 'text/html',
  '.js': 'text/javascript',
  '.wasm': 'application/wasm',
  '.css': 'text/css',
};
const server = createServer(async (req, res) => {
  const path = join(root, req.url === '/' ? 'index.html' : decodeURIComponent(req.url.split('?')[0]));
  try {
    const body = await readFile(path);
    res.writeHead(200, {
      'content-type': types[extname(path)] ?? 'application/octet-stream',
      'cross-origin-opener-policy': 'same-origin',
      'cross-origin-embedder-policy': 'require-corp',
    });
    res.end(body);
  } catch {
    res.writeHead(404).end();
  }
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const port = server.address().port;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
  args: [
    '--no-sandbox',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
    '--disable-quic',
  ],
});
try {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`http://127.0.0.1:${port}/`);
  await page.waitForFunction(() => document.getElementById('out')?.textContent !== 'running', null, {
    timeout: 60_000,
  });
  const text = await page.textContent('#out');
  const result = JSON.parse(text);
  if (errors.length || result.backend !== 'cpu' || !(result.err < 1e-5)) {
    console.error('FAIL: browser', text, errors);
    process.exitCode = 1;
  } else console.log(`ok: browser (Vite build), ${result.backend}, max error ${result.err.toExponential(2)}`);
} finally {
  await browser.close();
  server.close();
}
