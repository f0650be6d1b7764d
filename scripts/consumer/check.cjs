// The CommonJS consumer: require() both packages and run one call on the cpu backend.
const core = require('@flashattn/core');
const { createCpuBackend } = require('@flashattn/cpu');

(async () => {
  const shape = [1, 19, 2, 8];
  const n = shape.reduce((a, b) => a * b);
  const t = (s) =>
    core.fromFloat32(
      Float32Array.from({ length: n }, (_, i) => Math.cos(i + s)),
      'float32',
      shape,
    );
  const [q, k, v] = [t(1), t(2), t(3)];
  const backend = await createCpuBackend({ threads: 1 });
  const { out } = await backend.forward(q, k, v, {});
  const ref = core.referenceForward64(q, k, v, {}).out;
  const got = core.toFloat32(out);
  let err = 0;
  for (let i = 0; i < n; i++) err = Math.max(err, Math.abs(got[i] - ref[i]));
  await backend.dispose();
  if (!(err < 1e-5)) throw new Error(`max error ${err}`);
  console.log(`ok: CommonJS cpu, max error ${err.toExponential(2)}`);
})().catch((e) => {
  console.error('FAIL:', e);
  process.exit(1);
});
