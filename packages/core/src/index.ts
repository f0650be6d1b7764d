export * from './cost.js';
export * from './dtype.js';
export * from './errors.js';
export * from './mask.js';
export * from './online-softmax.js';
export * from './philox.js';
export * from './problem.js';
export * from './reference.js';
export * from './reference-backend.js';
export * from './registry.js';
export * from './types.js';

import { registerReferenceBackend } from './reference-backend.js';

// The float64 reference is always there at priority 0, so that 'auto' works with core alone.
registerReferenceBackend();
