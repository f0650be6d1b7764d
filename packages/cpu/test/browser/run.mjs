// Runs @flashattn/cpu (the built dist) in headless Chromium, with and without cross-origin
// isolation, and prints what the page reports: whether the Web Workers were used, and whether the
// 2-thread results equal the 1-thread ones bit for bit.
//
//   pnpm --filter @flashattn/cpu build && node packages/cpu/test/browser/run.mjs [path-to-chromium]
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const packages = fileURLToPath(new URL('../../../', import.meta.url));
const page = fileURLToPath(new URL('./page.html', import.meta.url));
const chromium = process.argv[2] ?? '/usr/bin/chromium';
const types = { '.js': 'text/javascript', '.html': 'text/html' };

async function once(isolated) {
  let resolveResult;
  const result = new Promise((r) => {
    resolveResult = r;
  });
  const server = createServer(async (req, res) => {
    if (isolated) {
      res.setHeader('Cross-Origin-Opener-Policy', 'same-origin');
      res.setHeader('Cross-Origin-Embedder-Policy', 'require-corp');
    }
    if (req.method === 'POST' && req.url === '/result') {
      let body = '';
      for await (const chunk of req) body += chunk;
      res.end('ok');
      resolveResult(JSON.parse(body));
      return;
    }
    try {
      const path = req.url === '/' ? page : join(packages, req.url.replace(/^\/(core|cpu)\//, '$1/'));
      res.setHeader('Content-Type', types[extname(path)] ?? 'application/octet-stream');
      res.end(await readFile(path));
    } catch {
      res.statusCode = 404;
      res.end();
    }
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${server.address().port}/`;
  const browser = spawn(
    chromium,
    ['--headless=new', '--no-sandbox', '--disable-gpu', '--user-data-dir=/tmp/flashattn-chromium', url],
    {
      stdio: 'ignore',
    },
  );
  const timeout = setTimeout(() => resolveResult({ error: 'timed out after 60 s' }), 60_000);
  const r = await result;
  clearTimeout(timeout);
  browser.kill();
  server.close();
  return r;
}

let failed = false;
for (const isolated of [true, false]) {
  const r = await once(isolated);
  console.log(isolated ? 'cross-origin isolated:' : 'not isolated:         ', JSON.stringify(r));
  const ok =
    !r.error &&
    r.identical &&
    (isolated
      ? /2 worker threads \(Web Workers/.test(r.info) &&
        /^2 threads: the calling thread and 1 worker \(Web Workers/.test(r.callerInfo)
      : /^single-threaded/.test(r.info) && /^single-threaded/.test(r.callerInfo));
  if (!ok) failed = true;
}
process.exit(failed ? 1 : 0);
