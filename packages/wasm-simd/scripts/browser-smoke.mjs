#!/usr/bin/env node
import { readFileSync } from 'node:fs';
// Browser smoke test (not part of vitest): serves core's and this package's dist to headless Chromium
// and runs a threaded forward and backward in Web Workers over shared memory, checked against the
// float64 reference. NOCOI=1 serves the page without COOP/COEP: the backend must then run
// single-threaded and say why. Needs /usr/bin/chromium (or CHROMIUM_PATH) and playwright-core
// (apps/playground has it). Run from packages/wasm-simd after pnpm build: node scripts/browser-smoke.mjs
import { createServer } from 'node:http';
import { createRequire } from 'node:module';

const here = new URL('..', import.meta.url).pathname;
const require = createRequire(`${here}../../apps/playground/package.json`);
const { chromium } = require('playwright-core');
const files = {
  '/core.js': `${here}../core/dist/index.js`,
  '/wasm.js': `${here}dist/index.js`,
};
const html = `<!doctype html><script type="importmap">{"imports":{"@flashattn/core":"/core.js"}}</script>
<script type="module">
import { tensorFromArray, referenceForward64, referenceBackward64, listBackends } from '@flashattn/core';
import { createWasmSimdBackend } from '/wasm.js';
const out = {};
try {
  const [b, s, hq, d] = [1, 200, 4, 40];
  const r = (n, k) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + k));
  const q = tensorFromArray(r(b*s*hq*d, 1), [b, s, hq, d]);
  const k = tensorFromArray(r(b*s*hq*d, 2), [b, s, hq, d]);
  const v = tensorFromArray(r(b*s*hq*d, 3), [b, s, hq, d]);
  const be = await createWasmSimdBackend({ threads: 2, minParallelFlops: 0 });
  out.info = be.info; out.crossOriginIsolated = self.crossOriginIsolated;
  const res = await be.forward(q, k, v, { causal: true, returnLse: true });
  const ref = referenceForward64(q, k, v, { causal: true });
  let e = 0; for (let i = 0; i < ref.out.length; i++) e = Math.max(e, Math.abs(ref.out[i] - res.out.data[i]));
  out.fwdErr = e;
  const g = await be.backward(q, q, k, v, res.out, res.lse, { causal: true });
  const rg = referenceBackward64(q, q, k, v, { causal: true });
  let eg = 0; for (let i = 0; i < rg.dq.length; i++) eg = Math.max(eg, Math.abs(rg.dq[i] - g.dq.data[i]));
  out.dqErr = eg;
  await be.dispose();
  out.list = await listBackends();
} catch (err) { out.error = String(err && err.stack || err); }
document.title = 'done';
window.__out = out;
</script>`;
const srv = createServer((req, res) => {
  const h = process.env.NOCOI
    ? {}
    : { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' };
  if (files[req.url]) {
    res.writeHead(200, { ...h, 'content-type': 'text/javascript' });
    res.end(readFileSync(files[req.url]));
    return;
  }
  res.writeHead(200, { ...h, 'content-type': 'text/html' });
  res.end(html);
}).listen(0, '127.0.0.1');
await new Promise((r) => srv.on('listening', r));
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
  args: ['--no-sandbox'],
});
const page = await browser.newPage();
page.on('console', (m) => console.log('console:', m.text()));
await page.goto(`http://127.0.0.1:${srv.address().port}/`);
await page.waitForFunction(() => document.title === 'done', null, { timeout: 60000 });
const result = await page.evaluate(() => window.__out);
console.log(JSON.stringify(result, null, 1));
await browser.close();
srv.close();
const threaded = result.info?.includes('worker threads');
const ok = !result.error && result.fwdErr < 1e-5 && result.dqErr < 1e-4 && threaded === !process.env.NOCOI;
console.log(ok ? 'browser smoke: ok' : 'browser smoke: FAILED');
process.exit(ok ? 0 : 1);
