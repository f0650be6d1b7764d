import { defineConformance } from '../src/index.js';
import { createSimpleBackend } from './simple-backend.js';

// The honest float32 tiled kernel of simple-backend.ts passes the suite: the tolerance rule is met by
// a real float32 online-softmax implementation, not only by the float64 reference. Quick list to
// spare CI time (the full list, ~1000-long sequences included, passes too: drop `quick` to see it).
defineConformance('simple float32 tiled (test backend)', async () => createSimpleBackend(), { quick: true });
