// Types of the generated src/generated/wasm-binaries.js (scripts/build-wasm.mjs writes it at build).
/** simd128, plain (non-shared) imported memory. */
export declare const simd: string;
/** simd128 + relaxed-simd (fused multiply-add), plain memory. */
export declare const relaxed: string;
/** simd128 + threads, shared imported memory. */
export declare const simdThreads: string;
/** simd128 + relaxed-simd + threads, shared imported memory. */
export declare const relaxedThreads: string;
