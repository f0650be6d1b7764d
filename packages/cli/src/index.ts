/** Programmatic access to the `flashattn` command and its pieces. */
export { BACKEND_PACKAGES, loadBackendPackages, openBackend, selectBackends } from './backends.js';
export { ANCHOR_VARIANTS, AnchorRunner, anchorName, loadOrt } from './bench/anchors.js';
export { RowReference, sampleRows, TOLERANCE_FLOOR } from './bench/check.js';
export { makeDout, makeInputs, randomNormal } from './bench/data.js';
export { encodeModel, matmulSoftmaxModel, multiHeadAttentionModel } from './bench/onnx.js';
export type { BenchOptions, BenchReport, BenchResult } from './bench/run.js';
export { benchCommand, capabilityGap } from './bench/run.js';
export type { BenchShape, ShapeSetName } from './bench/shapes.js';
export { cpuShapes, gpuShapes, shapeFlops, shapeLabel } from './bench/shapes.js';
export { CliError } from './errors.js';
export { gatherInfo, infoCommand } from './info.js';
export { bufferIo, type Io, processIo } from './io.js';
export { machineInfo } from './machine.js';
export { createProgram, run } from './program.js';
export { verifyCommand } from './verify.js';
