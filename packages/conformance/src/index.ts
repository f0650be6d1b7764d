export * from './cases.js';
export { type DefineConformanceOptions, defineConformance } from './harness.js';
