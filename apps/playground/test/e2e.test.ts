/**
 * End to end: build the app, serve it with `vite preview`, and drive Debian's Chromium through
 * playwright-core (no browser download): every available backend runs and matches the float64
 * reference, the step-through reaches the end and agrees with the plain softmax, the sweep hits the
 * O(N²) wall, the cost model shows its block sizes, and nothing is logged as an error.
 * Screenshots go to apps/playground/test-output/ (gitignored).
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type BrowserContext, chromium, type Page } from 'playwright-core';
import { build, type PreviewServer, preview } from 'vite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const outDir = join(root, 'test-output');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ARGS = [
  '--headless=new',
  '--enable-unsafe-webgpu',
  '--no-sandbox',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
];

const haveChromium = existsSync(CHROMIUM);
if (!haveChromium && process.env.CI) {
  throw new Error(`Chromium is not at ${CHROMIUM}: install it with apt-get install -y chromium`);
}
if (!haveChromium) console.warn(`skipping the playground e2e tests: no Chromium at ${CHROMIUM}`);

describe.skipIf(!haveChromium)('playground end to end (Chromium)', () => {
  let server: PreviewServer;
  let ctx: BrowserContext;
  let page: Page;
  let url: string;
  let profile: string;
  const problems: string[] = [];
  let available: string[] = [];

  const shot = (name: string, fullPage = true) =>
    page.screenshot({ path: join(outDir, `${name}.png`), fullPage });

  beforeAll(async () => {
    mkdirSync(outDir, { recursive: true });
    await build({ root, logLevel: 'warn' });
    server = await preview({
      root,
      logLevel: 'warn',
      preview: { port: 0, host: '127.0.0.1', strictPort: false },
    });
    url = server.resolvedUrls?.local[0] ?? '';
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\//);
    profile = mkdtempSync(join(tmpdir(), 'flashattn-chromium-'));
    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: false, // --headless=new is in ARGS
      args: ARGS,
      viewport: { width: 1280, height: 900 },
    });
    page = ctx.pages()[0] ?? (await ctx.newPage());
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`console.error: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  });

  afterAll(async () => {
    await ctx?.close();
    await new Promise<void>((r) => (server ? server.httpServer.close(() => r()) : r()));
    if (profile) rmSync(profile, { recursive: true, force: true });
  });

  it('loads cross-origin isolated and lists the backends with reasons', async () => {
    const res = await page.goto(url);
    expect(res?.headers()['cross-origin-opener-policy']).toBe('same-origin');
    expect(res?.headers()['cross-origin-embedder-policy']).toBe('require-corp');
    await page.waitForSelector('body[data-ready="true"]', { timeout: 60_000 });
    expect(await page.evaluate(() => crossOriginIsolated)).toBe(true);
    const rows = await page.$$eval('#backend-table tbody tr', (trs) =>
      trs.map((tr) => ({
        name: (tr as HTMLElement).dataset.backend ?? '',
        available: (tr as HTMLElement).dataset.available === 'true',
        text: tr.textContent ?? '',
      })),
    );
    for (const r of rows) if (!r.available) expect(r.text).toMatch(/unavailable: \S+/);
    available = rows.filter((r) => r.available).map((r) => r.name);
    console.info(`backends: ${rows.map((r) => `${r.name}=${r.available ? 'yes' : 'no'}`).join(', ')}`);
    expect(available).toContain('reference');
    await shot('01-loaded');
  });

  async function runWith(backend: string, fields: Record<string, string>, checks: Record<string, boolean>) {
    await page.click('#tab-btn-run');
    await page.selectOption('#run-backend', backend);
    for (const [id, value] of Object.entries(fields)) {
      if (id === 'run-dtype') await page.selectOption(`#${id}`, value);
      else await page.fill(`#${id}`, value);
    }
    for (const [id, on] of Object.entries(checks)) await page.setChecked(`#${id}`, on);
    await page.click('#run-go');
    await page.waitForSelector('#run-result[data-state="done"], #run-result[data-state="error"]', {
      timeout: 90_000,
    });
    return page.$eval('#run-result', (e) => ({ ...(e as HTMLElement).dataset }));
  }

  const PLAIN = {
    'run-b': '1',
    'run-sq': '128',
    'run-sk': '128',
    'run-hq': '2',
    'run-hk': '2',
    'run-d': '32',
  };
  const OFF = { 'run-causal': false, 'run-alibi': false };

  it('runs every available backend and matches the float64 reference', async () => {
    for (const name of available) {
      const r = await runWith(
        name,
        {
          ...PLAIN,
          'run-dtype': 'float32',
          'run-wl': '-1',
          'run-wr': '-1',
          'run-softcap': '0',
          'run-dropout': '0',
          'run-repeats': '2',
        },
        OFF,
      );
      // Soft: every backend is run and reported even when one of them is wrong.
      expect.soft(r.state, `${name}: ${r.error}`).toBe('done');
      expect.soft(r.backend).toBe(name);
      const err = Number(r.maxError);
      console.info(`${name}: max error ${err}, bound ${r.bound}, ${Number(r.timeMs).toFixed(1)} ms`);
      expect.soft(err, `${name}: max |out - ref64|`).toBeLessThanOrEqual(Number(r.bound));
      expect.soft(err, `${name}: max |out - ref64|`).toBeLessThan(1e-4);
      expect.soft(Number(r.lseError), `${name}: max |lse - ref64|`).toBeLessThan(1e-4);
      expect.soft(r.pass, name).toBe('true');
      expect.soft(Number(r.gflops), name).toBeGreaterThan(0);
      await shot(`02-run-${name}`);
    }
  });

  it('runs causal GQA with a window, softcap, ALiBi and dropout on each backend, or says what is unsupported', async () => {
    for (const name of available) {
      const r = await runWith(
        name,
        {
          'run-b': '2',
          'run-sq': '80',
          'run-sk': '144',
          'run-hq': '4',
          'run-hk': '2',
          'run-d': '24',
          'run-dtype': 'float32',
          'run-wl': '40',
          'run-wr': '-1',
          'run-softcap': '5',
          'run-dropout': '0.2',
          'run-repeats': '1',
        },
        { 'run-causal': true, 'run-alibi': true },
      );
      if (r.state === 'error') {
        expect.soft(r.error, name).toMatch(/UNSUPPORTED_FEATURE|does not support|unsupported/i);
        console.info(`${name}: ${r.error}`);
        continue;
      }
      expect.soft(r.pass, `${name}: error ${r.maxError} > bound ${r.bound}`).toBe('true');
    }
    await shot('03-run-options');
  });

  it('runs bfloat16 on the auto backend within the §8 bound', async () => {
    const r = await runWith(
      'auto',
      {
        ...PLAIN,
        'run-dtype': 'bfloat16',
        'run-wl': '-1',
        'run-wr': '-1',
        'run-softcap': '0',
        'run-dropout': '0',
      },
      OFF,
    );
    if (r.state === 'error') expect(r.error).toMatch(/UNSUPPORTED_FEATURE|dtype/i);
    else expect(r.pass, `error ${r.maxError} > bound ${r.bound}`).toBe('true');
    // The heatmap of the last good run was drawn.
    const w = await page.$eval('#run-heatmap', (c) => (c as HTMLCanvasElement).width);
    expect(w).toBeGreaterThan(1);
  });

  it('checks a sequence past the materialising limit against the two-pass reference on its last rows', async () => {
    // 2900² > 2²³: the reference is two-pass, over the last 512 query rows; causal, window and ALiBi
    // exercise the row alignment of that slice.
    const fast = ['wasm-simd', 'cpu', 'reference'].find((n) => available.includes(n)) ?? 'reference';
    const r = await runWith(
      fast,
      {
        'run-b': '1',
        'run-sq': '2900',
        'run-sk': '2900',
        'run-hq': '1',
        'run-hk': '1',
        'run-d': '16',
        'run-dtype': 'float32',
        'run-wl': '300',
        'run-wr': '-1',
        'run-softcap': '0',
        'run-dropout': '0',
        'run-repeats': '1',
      },
      { 'run-causal': true, 'run-alibi': true },
    );
    expect(r.state, r.error).toBe('done');
    expect(r.refMethod).toBe('two-pass');
    expect(r.refRowStart).toBe(String(2900 - 512));
    expect(Number(r.maxError)).toBeLessThan(1e-5);
    expect(Number(r.lseError)).toBeLessThan(1e-4);
    expect(r.pass).toBe('true');
  });

  it('steps through FlashAttention block by block and agrees with the plain softmax', async () => {
    await page.click('#tab-btn-see');
    await page.waitForSelector('#tab-see[data-steps]');
    const total = Number(await page.getAttribute('#tab-see', 'data-steps'));
    expect(total).toBeGreaterThan(5);
    const phases = new Set<string>();
    for (let i = 0; i < total - 1; i++) {
      await page.click('#see-next');
      phases.add((await page.getAttribute('#tab-see', 'data-phase')) ?? '');
      if (phases.has('rescale') && !existsSync(join(outDir, '04-see-rescale.png')))
        await shot('04-see-rescale');
    }
    expect(await page.isDisabled('#see-next')).toBe(true);
    for (const p of ['load-q', 'scores', 'rescale', 'accumulate', 'finalize', 'done'])
      expect(phases).toContain(p);
    expect(await page.getAttribute('#see-check', 'data-pass')).toBe('true');
    expect(Number(await page.getAttribute('#see-check', 'data-max-error'))).toBeLessThan(1e-12);
    await shot('05-see-done');
    // Causal: some blocks are skipped, and the result still matches.
    await page.setChecked('#see-causal', true);
    await page.click('#see-end');
    expect(await page.getAttribute('#see-check', 'data-pass')).toBe('true');
    await page.setChecked('#see-causal', false);
  });

  it('sweeps N and hits the O(N²) wall of the standard algorithm', async () => {
    await page.click('#tab-btn-compare');
    await page.waitForSelector('#cmp-backends input');
    for (const name of available) await page.setChecked(`#cmp-backends input[value="${name}"]`, true);
    await page.fill('#cmp-ns', '32, 64, 128, 2900');
    await page.fill('#cmp-hq', '1');
    await page.fill('#cmp-d', '16');
    await page.fill('#cmp-repeats', '1');
    // Past a 1 ms point a backend is not timed further: keeps SwiftShader out of N = 2900.
    await page.fill('#cmp-budget', '0.001');
    await page.click('#cmp-go');
    await page.waitForSelector('#tab-compare[data-state="done"], #tab-compare[data-state="error"]', {
      timeout: 110_000,
    });
    expect(await page.getAttribute('#tab-compare', 'data-state')).toBe('done');
    // 2900² > 2²³: the materialising reference refuses with OUT_OF_MEMORY.
    expect(await page.getAttribute('#tab-compare', 'data-wall')).toBe('2900');
    for (const name of available) {
      const cell = await page.textContent(`#cmp-table td[data-backend="${name}"][data-n="32"]`);
      expect(cell, name).toMatch(/\d/);
    }
    expect(
      await page.textContent('#cmp-table td[data-backend="standard (materialising)"][data-n="2900"]'),
    ).toMatch(/refused/);
    expect(await page.$$('#cmp-time-chart canvas, #cmp-mem-chart canvas')).toHaveLength(2);
    await shot('06-compare');
  });

  it('shows the §10 cost model for the device presets', async () => {
    await page.click('#tab-btn-cost');
    await page.waitForSelector('#cost-table[data-bc]');
    // A100: 164 KiB of shared memory per SM = 83968 half-precision elements; d = 64.
    expect(await page.getAttribute('#cost-table', 'data-bc')).toBe('328');
    expect(await page.getAttribute('#cost-table', 'data-br')).toBe('64');
    await page.selectOption('#cost-preset', { label: 'H100 SXM5' });
    expect(await page.getAttribute('#cost-table', 'data-bc')).toBe(String(Math.ceil((228 * 512) / 256)));
    expect(await page.$$('#cost-hbm-chart canvas, #cost-act-chart canvas')).toHaveLength(2);
    await shot('07-cost');
  });

  it('logged no errors', async () => {
    // The picture for the README: the step-through halfway, at its most telling.
    await page.setViewportSize({ width: 1280, height: 800 });
    await page.click('#tab-btn-see');
    await page.click('#see-reset');
    for (let i = 0; i < 20; i++) {
      if ((await page.getAttribute('#tab-see', 'data-phase')) === 'rescale') break;
      await page.click('#see-next');
    }
    await shot('readme', false);
    expect(problems).toEqual([]);
  });
});
