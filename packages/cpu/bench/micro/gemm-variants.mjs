// Register-block shapes and storage for the tile product C = Aᵀ·B (64×128, k = 64), the kernel of
// PERF.md changes 1, 2, 7, 10 and 11. Each variant is generated as its own function so that V8's
// feedback stays monomorphic. Prints the best of 12 timings in GFLOP per CPU-second.
//
//   node bench/micro/gemm-variants.mjs                 all variants
//   node bench/micro/gemm-variants.mjs 2x4:array 3x3:array   (each in its own process)
const M = 64;
const N = 128;
const K = 64;

function kernel(R, Cn) {
  let s = 'return function (A, lda, B, ldb, C, ldc, M, N, K) {\n';
  s += ` for (let m = 0; m < M; m += ${R}) {\n  for (let n = 0; n < N; n += ${Cn}) {\n`;
  for (let i = 0; i < R; i++) for (let j = 0; j < Cn; j++) s += `   let c${i}_${j} = 0;\n`;
  s += '   let ai = m, bi = n;\n   for (let k = 0; k < K; k++) {\n';
  for (let j = 0; j < Cn; j++) s += `    const b${j} = B[bi + ${j}];\n`;
  for (let i = 0; i < R; i++) {
    s += `    { const a = A[ai + ${i}];`;
    for (let j = 0; j < Cn; j++) s += ` c${i}_${j} += a * b${j};`;
    s += ' }\n';
  }
  s += '    ai += lda; bi += ldb;\n   }\n';
  for (let i = 0; i < R; i++)
    for (let j = 0; j < Cn; j++) s += `   C[(m + ${i}) * ldc + n + ${j}] = c${i}_${j};\n`;
  s += '  }\n }\n}';
  return new Function(s)();
}

// A dot product per output with one accumulator: bound by the add latency.
function dot(A, lda, B, ldb, C, ldc, M, N, K) {
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let acc = 0;
      for (let k = 0; k < K; k++) acc += A[k * lda + m] * B[k * ldb + n];
      C[m * ldc + n] = acc;
    }
  }
}

function storage(kind, n) {
  const a = kind === 'f64' ? new Float64Array(n) : kind === 'f32' ? new Float32Array(n) : [];
  for (let i = 0; i < n; i++) a[i] = Math.random() - 0.5;
  return a;
}

function cpuMs() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

function run(spec) {
  const [shape, kind] = spec.split(':');
  const [R, Cn] = shape === 'dot' ? [1, 1] : shape.split('x').map(Number);
  const g = shape === 'dot' ? dot : kernel(R, Cn);
  const Mr = Math.ceil(M / R) * R;
  const Nr = Math.ceil(N / Cn) * Cn;
  const A = storage(kind, K * Mr);
  const B = storage(kind, K * Nr);
  const C = storage(kind, Mr * Nr);
  const f = () => g(A, Mr, B, Nr, C, Nr, Mr, Nr, K);
  for (let w = 0; w < 30; w++) f();
  let best = 0;
  for (let r = 0; r < 12; r++) {
    const c0 = cpuMs();
    for (let w = 0; w < 100; w++) f();
    best = Math.max(best, (2 * Mr * Nr * K * 100) / (cpuMs() - c0) / 1e6);
  }
  console.log(`${spec.padEnd(10)} ${best.toFixed(2)} GFLOP/s`);
}

// One variant per process: variants sharing a process share V8's feedback for the common code
// and distort each other.
const specs = process.argv.slice(2);
if (specs.length === 1) run(specs[0]);
else {
  const { spawnSync } = await import('node:child_process');
  const all = specs.length
    ? specs
    : ['dot:f64', '2x4:f32', '2x4:f64', '2x4:array', '4x4:array', '3x3:array', '4x2:array', '2x6:array'];
  for (const s of all) spawnSync(process.execPath, [process.argv[1], s], { stdio: 'inherit' });
}
