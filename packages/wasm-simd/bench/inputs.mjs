// Deterministic benchmark inputs: uniform in [-1, 1) from a 32-bit LCG, so that every script and
// every run times the same data (never zeros: METHOD.md).
export function uniformSource(seed) {
  let state = seed >>> 0;
  return (n) => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
      a[i] = (state / 2 ** 32) * 2 - 1;
    }
    return a;
  };
}
