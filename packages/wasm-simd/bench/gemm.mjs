// Tuning aid: the packed GEMM micro-kernel against the multiply-add peak, interleaved.
import { readFileSync } from 'node:fs';

const name = process.argv[2] ?? 'simd';
const [P, K, N] = (process.argv[3] ?? '16,64,64').split(',').map(Number);
const M = P * 4;
const bytes = readFileSync(new URL(`../build/${name}.wasm`, import.meta.url));
const memory = new WebAssembly.Memory({ initial: 64, maximum: 65536 });
const { instance } = await WebAssembly.instantiate(bytes, { env: { memory } });
const e = instance.exports;
const f = new Float32Array(memory.buffer, 65536, M * K + K * N + M * N);
for (let i = 0; i < f.length; i++) f[i] = Math.random();
e.gemm_bench(65536, P, K, N, 100);
e.peak(100000);
let bestG = 0;
let bestP = 0;
for (let r = 0; r < 15; r++) {
  let t = performance.now();
  const it = Math.max(1, Math.round(3e8 / (2 * M * K * N)));
  e.gemm_bench(65536, P, K, N, it);
  bestG = Math.max(bestG, (2 * M * K * N * it) / ((performance.now() - t) / 1000) / 1e9);
  t = performance.now();
  e.peak(2_000_000);
  bestP = Math.max(bestP, (96 * 2_000_000) / ((performance.now() - t) / 1000) / 1e9);
}
console.log(
  `${name} gemm P${P}(x4 rows) K${K} N${N}: best ${bestG.toFixed(2)} GFLOP/s, peak best ${bestP.toFixed(2)}, ratio ${(bestG / bestP).toFixed(2)}`,
);
