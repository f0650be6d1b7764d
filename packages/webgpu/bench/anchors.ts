/**
 * Anchors measured on the same adapter in the same run as the attention kernels (SPEC §9, issue 4):
 * a tiled WGSL float32 matrix product, the device's copy bandwidth, and a plain three-pass attention
 * (S = QKᵀ, softmax, P·V, each through global memory).
 */

const BU = { COPY_SRC: 4, COPY_DST: 8, UNIFORM: 64, STORAGE: 128 };

export async function timeGpu(
  device: GPUDevice,
  submit: () => void,
  reps: number,
  warm = 2,
): Promise<number> {
  for (let i = 0; i < warm; i++) submit();
  await device.queue.onSubmittedWorkDone();
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    submit();
    await device.queue.onSubmittedWorkDone();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)] / 1000;
}

function fillRandom(device: GPUDevice, buf: GPUBuffer, n: number, seed: number): void {
  const chunk = 1 << 22;
  const a = new Float32Array(Math.min(chunk, n));
  let s = seed >>> 0;
  for (let i = 0; i < a.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = s / 2 ** 32 - 0.5;
  }
  for (let off = 0; off < n; off += chunk) {
    const m = Math.min(chunk, n - off);
    device.queue.writeBuffer(buf, off * 4, a.buffer, 0, m * 4);
  }
}

export function storage(device: GPUDevice, n: number, seed?: number): GPUBuffer {
  const b = device.createBuffer({ size: Math.max(4, n * 4), usage: BU.STORAGE | BU.COPY_DST | BU.COPY_SRC });
  if (seed !== undefined) fillRandom(device, b, n, seed);
  return b;
}

function uniform(device: GPUDevice, words: number[]): GPUBuffer {
  const b = device.createBuffer({
    size: Math.ceil((words.length * 4) / 16) * 16,
    usage: BU.UNIFORM | BU.COPY_DST,
  });
  device.queue.writeBuffer(b, 0, new Uint32Array(words));
  return b;
}

function pipeline(device: GPUDevice, code: string): GPUComputePipeline {
  return device.createComputePipeline({
    layout: 'auto',
    compute: { module: device.createShaderModule({ code }), entryPoint: 'main' },
  });
}

function bindAll(device: GPUDevice, p: GPUComputePipeline, bufs: GPUBuffer[]): GPUBindGroup {
  return device.createBindGroup({
    layout: p.getBindGroupLayout(0),
    entries: bufs.map((buffer, binding) => ({ binding, resource: { buffer } })),
  });
}

function dispatch(
  enc: GPUCommandEncoder,
  p: GPUComputePipeline,
  g: GPUBindGroup,
  x: number,
  y = 1,
  z = 1,
): void {
  const pass = enc.beginComputePass();
  pass.setPipeline(p);
  pass.setBindGroup(0, g);
  pass.dispatchWorkgroups(x, y, z);
  pass.end();
}

/** C = A·B, M=N=K multiple of 128: 128×128 tiles, 256 threads, 8×8 per thread, K steps of 8. */
const MATMUL = /* wgsl */ `
struct P { n: u32, _a: u32, _b: u32, _c: u32 }
@group(0) @binding(0) var<uniform> U: P;
@group(0) @binding(1) var<storage, read> A: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> B: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> C: array<vec4<f32>>;
var<workgroup> As: array<vec4<f32>, 256>;   // [k][m/4], 8 x 32
var<workgroup> Bs: array<vec4<f32>, 256>;   // [k][n/4]
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let n = U.n;
  let n4 = n / 4u;
  let tx = lid % 16u;
  let ty = lid / 16u;
  let m0 = wg.y * 128u;
  let c0 = wg.x * 128u;
  var acc: array<vec4<f32>, 16>;
  for (var i = 0u; i < 16u; i++) { acc[i] = vec4<f32>(0.0); }
  for (var k0 = 0u; k0 < n; k0 += 8u) {
    // A tile: 128 rows x 8 k -> As[k][m/4] (transposed on load: 4 rows per vec4)
    {
      let r = lid / 2u;          // row 0..127
      let kq = (lid % 2u) * 4u;  // k 0 or 4
      let a = A[((m0 + r) * n + k0 + kq) / 4u];
      As[(kq + 0u) * 32u + r / 4u][r % 4u] = a.x;
      As[(kq + 1u) * 32u + r / 4u][r % 4u] = a.y;
      As[(kq + 2u) * 32u + r / 4u][r % 4u] = a.z;
      As[(kq + 3u) * 32u + r / 4u][r % 4u] = a.w;
      let kk = lid / 32u;        // 0..7
      let cq = lid % 32u;
      Bs[kk * 32u + cq] = B[(k0 + kk) * n4 + c0 / 4u + cq];
    }
    workgroupBarrier();
    for (var k = 0u; k < 8u; k++) {
      let a0 = As[k * 32u + ty];
      let a1 = As[k * 32u + ty + 16u];
      let b0 = Bs[k * 32u + tx];
      let b1 = Bs[k * 32u + tx + 16u];
      acc[0] += a0.x * b0; acc[1] += a0.x * b1;
      acc[2] += a0.y * b0; acc[3] += a0.y * b1;
      acc[4] += a0.z * b0; acc[5] += a0.z * b1;
      acc[6] += a0.w * b0; acc[7] += a0.w * b1;
      acc[8] += a1.x * b0; acc[9] += a1.x * b1;
      acc[10] += a1.y * b0; acc[11] += a1.y * b1;
      acc[12] += a1.z * b0; acc[13] += a1.z * b1;
      acc[14] += a1.w * b0; acc[15] += a1.w * b1;
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 8u; i++) {
    let row = m0 + (i / 4u) * 64u + ty * 4u + i % 4u;
    C[(row * n + c0) / 4u + tx] = acc[i * 2u];
    C[(row * n + c0) / 4u + tx + 16u] = acc[i * 2u + 1u];
  }
}
`;

export async function matmulTflops(
  device: GPUDevice,
  n = 4096,
): Promise<{ tflops: number; seconds: number; n: number }> {
  const p = pipeline(device, MATMUL);
  const a = storage(device, n * n, 1);
  const b = storage(device, n * n, 2);
  const c = storage(device, n * n);
  const g = bindAll(device, p, [uniform(device, [n, 0, 0, 0]), a, b, c]);
  const reps = 4;
  const t = await timeGpu(
    device,
    () => {
      const enc = device.createCommandEncoder();
      for (let r = 0; r < reps; r++) dispatch(enc, p, g, n / 128, n / 128);
      device.queue.submit([enc.finish()]);
    },
    5,
  );
  for (const x of [a, b, c]) x.destroy();
  return { tflops: (2 * n ** 3 * reps) / t / 1e12, seconds: t / reps, n };
}

/** Copy bandwidth (bytes read + written per second) of copyBufferToBuffer on a large buffer. */
export async function copyGBps(device: GPUDevice, bytes = 1 << 30): Promise<number> {
  const a = device.createBuffer({ size: bytes, usage: BU.COPY_SRC | BU.COPY_DST | BU.STORAGE });
  const b = device.createBuffer({ size: bytes, usage: BU.COPY_SRC | BU.COPY_DST | BU.STORAGE });
  const reps = 4;
  const t = await timeGpu(
    device,
    () => {
      const enc = device.createCommandEncoder();
      for (let r = 0; r < reps; r++) enc.copyBufferToBuffer(a, 0, b, 0, bytes);
      device.queue.submit([enc.finish()]);
    },
    5,
  );
  a.destroy();
  b.destroy();
  return (2 * bytes * reps) / t / 1e9;
}

const THREE_S = /* wgsl */ `
struct P { s: u32, d: u32, hq: u32, heads: u32, scale: f32, h0: u32, _a: u32, _b: u32 }
@group(0) @binding(0) var<uniform> U: P;
@group(0) @binding(1) var<storage, read> Q: array<f32>;
@group(0) @binding(2) var<storage, read> K: array<f32>;
@group(0) @binding(3) var<storage, read_write> S: array<f32>;
@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let j = g.x; let i = g.y; let hh = g.z;
  if (i >= U.s || j >= U.s) { return; }
  let bh = U.h0 + hh; let b = bh / U.hq; let h = bh % U.hq;
  let qa = ((b * U.s + i) * U.hq + h) * U.d;
  let ka = ((b * U.s + j) * U.hq + h) * U.d;
  var acc: f32 = 0.0;
  for (var c = 0u; c < U.d; c++) { acc += Q[qa + c] * K[ka + c]; }
  S[(hh * U.s + i) * U.s + j] = acc * U.scale;
}`;
const THREE_SOFTMAX = /* wgsl */ `
struct P { s: u32, d: u32, hq: u32, heads: u32, scale: f32, h0: u32, _a: u32, _b: u32 }
@group(0) @binding(0) var<uniform> U: P;
@group(0) @binding(1) var<storage, read_write> S: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let row = g.x + g.y * 65535u * 64u;
  if (row >= U.s * U.heads) { return; }
  let a = row * U.s;
  var m: f32 = -3.0e38;
  for (var j = 0u; j < U.s; j++) { m = max(m, S[a + j]); }
  var l: f32 = 0.0;
  for (var j = 0u; j < U.s; j++) { l += exp(S[a + j] - m); }
  for (var j = 0u; j < U.s; j++) { S[a + j] = exp(S[a + j] - m) / l; }
}`;
const THREE_PV = /* wgsl */ `
struct P { s: u32, d: u32, hq: u32, heads: u32, scale: f32, h0: u32, _a: u32, _b: u32 }
@group(0) @binding(0) var<uniform> U: P;
@group(0) @binding(1) var<storage, read> S: array<f32>;
@group(0) @binding(2) var<storage, read> V: array<f32>;
@group(0) @binding(3) var<storage, read_write> O: array<f32>;
@compute @workgroup_size(64, 4)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let c = g.x; let i = g.y; let hh = g.z;
  if (c >= U.d || i >= U.s) { return; }
  let bh = U.h0 + hh; let b = bh / U.hq; let h = bh % U.hq;
  var acc: f32 = 0.0;
  for (var j = 0u; j < U.s; j++) { acc += S[(hh * U.s + i) * U.s + j] * V[((b * U.s + j) * U.hq + h) * U.d + c]; }
  O[((b * U.s + i) * U.hq + h) * U.d + c] = acc;
}`;

/**
 * The plain three-pass attention at (b, s, hq, d), non-causal, heads processed in groups whose S fits
 * one binding. Returns seconds per forward and TFLOP/s (4·d·s²·b·hq), or the error it hit.
 */
export async function threePass(
  device: GPUDevice,
  b: number,
  s: number,
  hq: number,
  d: number,
): Promise<{ seconds: number; tflops: number } | { error: string }> {
  const maxBind = device.limits.maxStorageBufferBindingSize;
  const perHead = s * s * 4;
  const heads = Math.floor(Math.min(maxBind, 2 ** 31) / perHead);
  if (heads < 1)
    return { error: `S of one head (${perHead} bytes) exceeds maxStorageBufferBindingSize ${maxBind}` };
  const total = b * hq;
  const group = Math.min(heads, total);
  device.pushErrorScope('out-of-memory');
  device.pushErrorScope('validation');
  const q = storage(device, b * s * hq * d, 3);
  const k = storage(device, b * s * hq * d, 4);
  const v = storage(device, b * s * hq * d, 5);
  const o = storage(device, b * s * hq * d);
  const S = device.createBuffer({ size: group * perHead, usage: BU.STORAGE });
  const pS = pipeline(device, THREE_S);
  const pM = pipeline(device, THREE_SOFTMAX);
  const pV = pipeline(device, THREE_PV);
  const groups: GPUBindGroup[][] = [];
  for (let h0 = 0; h0 < total; h0 += group) {
    const n = Math.min(group, total - h0);
    const u = uniform(device, [s, d, hq, n, 0, h0, 0, 0]);
    device.queue.writeBuffer(u, 16, new Float32Array([1 / Math.sqrt(d)]));
    groups.push([
      bindAll(device, pS, [u, q, k, S]),
      bindAll(device, pM, [u, S]),
      bindAll(device, pV, [u, S, v, o]),
    ]);
  }
  const err1 = await device.popErrorScope();
  const err2 = await device.popErrorScope();
  if (err1 || err2) {
    for (const x of [q, k, v, o, S]) x.destroy();
    return { error: (err1 ?? err2)?.message ?? 'error' };
  }
  const t = await timeGpu(
    device,
    () => {
      const enc = device.createCommandEncoder();
      let h0 = 0;
      for (const [gS, gM, gV] of groups) {
        const n = Math.min(group, total - h0);
        dispatch(enc, pS, gS, Math.ceil(s / 16), Math.ceil(s / 16), n);
        const rows = s * n;
        const wx = Math.min(65535, Math.ceil(rows / 64));
        dispatch(enc, pM, gM, wx, Math.ceil(Math.ceil(rows / 64) / 65535));
        dispatch(enc, pV, gV, Math.ceil(d / 64), Math.ceil(s / 4), n);
        h0 += group;
      }
      device.queue.submit([enc.finish()]);
    },
    2,
    1,
  );
  for (const x of [q, k, v, o, S]) x.destroy();
  return { seconds: t, tflops: (4 * d * s * s * b * hq) / t / 1e12 };
}

const COPY = /* wgsl */ `
@group(0) @binding(0) var<storage, read> A: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> B: array<vec4<f32>>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
  let n = arrayLength(&A);
  for (var i = g.x; i < n; i += nw.x * 256u) { B[i] = A[i]; }
}`;

/** Copy bandwidth of a WGSL vec4 copy kernel (bytes read + written per second). */
export async function shaderCopyGBps(device: GPUDevice, bytes = 1 << 30): Promise<number> {
  const a = device.createBuffer({ size: bytes, usage: BU.STORAGE });
  const b = device.createBuffer({ size: bytes, usage: BU.STORAGE });
  const p = pipeline(device, COPY);
  const g = bindAll(device, p, [a, b]);
  const reps = 4;
  const t = await timeGpu(
    device,
    () => {
      const enc = device.createCommandEncoder();
      for (let r = 0; r < reps; r++) dispatch(enc, p, g, 4096);
      device.queue.submit([enc.finish()]);
    },
    5,
  );
  a.destroy();
  b.destroy();
  return (2 * bytes * reps) / t / 1e9;
}
