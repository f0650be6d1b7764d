/** What the kernel-path tests share: seeded float32 inputs and the largest elementwise difference. */
import { fromFloat32, type HostTensor } from '@flashattn/core';

/** A float32 tensor of values in [-1, 1) from a seeded integer hash (the same values on every run). */
export function seededTensor(shape: number[], seed: number): HostTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s ^ (s >>> 15), 2246822519) + 3266489917 + i) >>> 0;
    a[i] = (s / 2 ** 32 - 0.5) * 2;
  }
  return fromFloat32(a, 'float32', shape);
}

/** max |a - b|; Infinity where exactly one side is NaN (a NaN where the reference has none is a failure). */
export function maxErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let e = 0;
  for (let i = 0; i < a.length; i++) {
    if (Number.isNaN(a[i]) !== Number.isNaN(b[i])) return Number.POSITIVE_INFINITY;
    if (a[i] !== b[i]) e = Math.max(e, Math.abs(a[i] - b[i]));
  }
  return e;
}
