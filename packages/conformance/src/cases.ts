/**
 * `@flashattn/conformance/cases`: everything but the vitest harness, for use outside a test runner
 * (`flashattn verify`) and from CommonJS.
 */
export { type CaseListOptions, conformanceCases, describeSpec } from './case-list.js';
export { type CheckKind, type CloseResult, checkClose, formatIndex, TOLERANCE_FLOOR } from './check.js';
export { type ConformanceInputs, lseLengthOf, makeInputs, shapesOf, specFeatures } from './inputs.js';
export { gaussian, mulberry32, permutation } from './prng.js';
export { runCase } from './run.js';
export type {
  CaseKind,
  CaseResult,
  CaseStatus,
  ConformanceCase,
  ErrorCaseSpec,
  ErrorInputs,
  ProblemSpec,
  RunContext,
} from './types.js';
