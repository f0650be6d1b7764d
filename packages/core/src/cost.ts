/**
 * The cost model of SPEC §10 (from the FlashAttention paper, Dao et al. 2022, and its notes), plus
 * the FLOP count of SPEC §9. These are the formulas the playground draws and the benchmarks divide
 * by; backends report measured allocations so that the model can be held against reality.
 *
 * Conventions: N = sequence length, d = head dim, M = on-chip (shared) memory per SM in elements.
 * HBM counts are in elements, per head, with the Θ constant taken as 1.
 */

/**
 * FlashAttention tile sizes for on-chip memory M (elements) and head dim d:
 * Bc = ceil(M / (4d)) key/value rows, Br = min(Bc, d) query rows. Sized so that the Q, K, V and O
 * tiles (each at most M/4 elements) fit on chip together.
 */
export function flashBlockSizes(M: number, d: number): { Bc: number; Br: number } {
  const Bc = Math.ceil(M / (4 * d));
  return { Bc, Br: Math.min(Bc, d) };
}

/**
 * HBM accesses of standard attention, in elements per head: N·d + N² (read Q, K, V and write O, plus
 * the N×N score and probability matrices). The Θ(·) constant is taken as 1.
 */
export function hbmAccessesStandard(N: number, d: number): number {
  return N * d + N * N;
}

/**
 * HBM accesses of FlashAttention, in elements per head: N²·d² / M, with M the on-chip memory in
 * elements. Q and O (N·d elements) are passed over once per K/V tile, and there are N/Bc = Θ(N·d/M)
 * such tiles. Θ constant 1.
 */
export function hbmAccessesFlash(N: number, d: number, M: number): number {
  return (N * N * d * d) / M;
}

/** Sizes for the activation-memory formulas: s = seq, b = batch, h = hidden (heads·d), a = heads. */
export interface ActivationShape {
  seq: number;
  batch: number;
  hidden: number;
  heads: number;
}

/**
 * Bytes kept for backward by standard attention with 16-bit activations: 11·s·b·h + 5·a·s²·b.
 * The s² term is, per head, the 16-bit scores and softmax output and the 1-byte dropout mask.
 */
export function activationBytesStandard({ seq, batch, hidden, heads }: ActivationShape): number {
  return 11 * seq * batch * hidden + 5 * heads * seq * seq * batch;
}

/**
 * Bytes kept for backward by FlashAttention: 12·s·b·h + 4·s·b·a. No s² term: q, k, v, out and the
 * block's input and output in 16 bits, and one float32 logsumexp (4 bytes) per row and head.
 */
export function activationBytesFlash({ seq, batch, hidden, heads }: ActivationShape): number {
  return 12 * seq * batch * hidden + 4 * seq * batch * heads;
}

/**
 * Number of allowed (i, j) pairs of one head under SPEC §3 with no window and no padding: sq·sk, or,
 * when causal with bottom-right alignment, the sum over rows i of min(sk, max(0, i + sk - sq + 1)).
 * Closed form: sq·(2sk - sq + 1)/2 when sq <= sk (every row sees at least one key), else sk·(sk + 1)/2
 * (the first sq - sk rows see none).
 */
export function allowedPairs(seqQ: number, seqK: number, causal: boolean): number {
  if (seqQ <= 0 || seqK <= 0) return 0;
  if (!causal) return seqQ * seqK;
  if (seqQ <= seqK) return (seqQ * (2 * seqK - seqQ + 1)) / 2;
  return (seqK * (seqK + 1)) / 2;
}

/**
 * FLOPs of attention over `allowedPairs` (i, j) pairs summed over batch and heads (SPEC §9):
 * forward = 4·d·pairs (2·d for q·k and 2·d for p·v per pair); backward = 2.5 × forward.
 */
export function attentionFlops({
  allowedPairs,
  headDim,
  backward = false,
}: {
  allowedPairs: number;
  headDim: number;
  backward?: boolean;
}): number {
  const forward = 4 * headDim * allowedPairs;
  return backward ? 2.5 * forward : forward;
}

/** The shape fields of a problem that the FLOP count needs. */
export interface FlopShape {
  batch: number;
  headsQ: number;
  seqQ: number;
  seqK: number;
  headDim: number;
  causal?: boolean;
}

/**
 * FLOPs of one forward pass (SPEC §9): 4·d·batch·hq·allowedPairs(sq, sk, causal). Causal with sq = sk
 * counts sq·(sq + 1)/2 pairs, "about half" of the dense count but exact.
 */
export function forwardFlops({ batch, headsQ, seqQ, seqK, headDim, causal = false }: FlopShape): number {
  return attentionFlops({ allowedPairs: batch * headsQ * allowedPairs(seqQ, seqK, causal), headDim });
}

/** FLOPs of one backward pass: 2.5 × forwardFlops (SPEC §9). */
export function backwardFlops(shape: FlopShape): number {
  return 2.5 * forwardFlops(shape);
}

/** On-chip figures of a GPU, for choosing M in the formulas above. */
export interface GpuPreset {
  name: string;
  smCount: number;
  /** Largest shared memory one SM can give to its blocks (KiB): M comes from this. */
  sharedMemPerSMKiB: number;
  /** The combined L1 / shared-memory array per SM (KiB), of which the above is the configurable part. */
  l1SharedPerSMKiB: number;
  l2MiB?: number;
  /** Peak memory bandwidth in GB/s (10^9 bytes per second). */
  hbmGBs?: number;
  /** The vendor documents the figures come from. */
  source: string;
}

const CUDA_GUIDE =
  "NVIDIA CUDA C++ Programming Guide, 'Technical Specifications per Compute Capability' (maximum shared memory per SM)";

/**
 * Reference GPUs. SM counts, cache sizes and bandwidths are the vendor's published figures for the
 * named part; shared memory per SM is the CUDA guide's maximum for the part's compute capability.
 */
export const gpuPresets: readonly GpuPreset[] = [
  {
    name: 'A100 SXM4 40GB',
    smCount: 108,
    sharedMemPerSMKiB: 164,
    l1SharedPerSMKiB: 192,
    l2MiB: 40,
    hbmGBs: 1555,
    source: `NVIDIA A100 Tensor Core GPU Architecture whitepaper (2020); ${CUDA_GUIDE}, compute capability 8.0`,
  },
  {
    name: 'H100 SXM5',
    smCount: 132,
    sharedMemPerSMKiB: 228,
    l1SharedPerSMKiB: 256,
    l2MiB: 50,
    hbmGBs: 3350,
    source: `NVIDIA H100 Tensor Core GPU Architecture whitepaper and H100 datasheet; ${CUDA_GUIDE}, compute capability 9.0`,
  },
  {
    name: 'H200 SXM',
    smCount: 132,
    sharedMemPerSMKiB: 228,
    l1SharedPerSMKiB: 256,
    l2MiB: 50,
    hbmGBs: 4800,
    source: `NVIDIA H200 Tensor Core GPU datasheet (same Hopper SM as H100 SXM5); ${CUDA_GUIDE}, compute capability 9.0`,
  },
  {
    name: 'GeForce RTX 4090',
    smCount: 128,
    sharedMemPerSMKiB: 100,
    l1SharedPerSMKiB: 128,
    l2MiB: 72,
    hbmGBs: 1008,
    source: `NVIDIA Ada Lovelace GPU Architecture whitepaper; ${CUDA_GUIDE}, compute capability 8.9`,
  },
  {
    name: 'V100 SXM2',
    smCount: 80,
    sharedMemPerSMKiB: 96,
    l1SharedPerSMKiB: 128,
    l2MiB: 6,
    hbmGBs: 900,
    source: `NVIDIA Tesla V100 GPU Architecture whitepaper (2017); ${CUDA_GUIDE}, compute capability 7.0`,
  },
];

/** On-chip memory M in elements of `bytesPerElement` bytes for a preset: its shared memory per SM. */
export function onChipElements(preset: GpuPreset, bytesPerElement: number): number {
  return Math.floor((preset.sharedMemPerSMKiB * 1024) / bytesPerElement);
}
