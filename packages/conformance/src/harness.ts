/**
 * defineConformance: the whole suite as vitest blocks, one `it` per case, for a backend's own test file.
 */
import type { Backend } from '@flashattn/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { conformanceCases } from './case-list.js';
import { runCase } from './run.js';

export interface DefineConformanceOptions {
  /** Skip the whole suite (e.g. no GPU); the reason shows in the skipped block's title. */
  skipReason?: string;
  /** The smaller case list (slow backends, CI time). */
  quick?: boolean;
  /** Per-case timeout in milliseconds (default 120 000). */
  timeout?: number;
}

/**
 * Registers `describe('<name> conformance')` with one `it` per case. The backend is made once by
 * `factory` (beforeAll) and disposed afterwards (afterAll); the DISPOSED case makes a second instance.
 * A case the backend lacks a feature for passes with the reason printed ("unsupported: ...").
 */
export function defineConformance(
  name: string,
  factory: () => Promise<Backend>,
  options: DefineConformanceOptions = {},
): void {
  const timeout = options.timeout ?? 120_000;
  if (options.skipReason) {
    describe.skip(`${name} conformance — skipped: ${options.skipReason}`, () => {
      it(`every case (skipped: ${options.skipReason})`, () => {});
    });
    return;
  }
  const cases = conformanceCases({ quick: options.quick });
  describe(`${name} conformance${options.quick ? ' (quick)' : ''}`, () => {
    let backend: Backend | undefined;
    beforeAll(async () => {
      backend = await factory();
    }, timeout);
    afterAll(async () => {
      await backend?.dispose();
    }, timeout);
    for (const c of cases) {
      it(
        c.name,
        async () => {
          if (!backend) throw new Error(`${name}: the factory did not produce a backend`);
          const r = await runCase(backend, c, { factory });
          if (r.status === 'unsupported') {
            console.info(`[${name} conformance] unsupported: ${c.name}: ${r.message ?? ''}`);
            return;
          }
          if (r.status === 'fail') expect.fail(r.message ?? `${c.name} failed`);
        },
        timeout,
      );
    }
  });
}
