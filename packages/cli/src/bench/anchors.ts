/**
 * Anchors: onnxruntime-node on the same shapes, in the same run (SPEC §9). Two graphs, each with
 * intraOpNumThreads 1 and 2: the com.microsoft MultiHeadAttention contrib op (onnxruntime's fused CPU
 * attention) and the plain MatMul–Softmax–MatMul graph a framework exports.
 */
import { importOptional, packageVersion } from '../backends.js';
import type { BenchInputs } from './data.js';
import { type AttentionGraphSpec, matmulSoftmaxModel, multiHeadAttentionModel } from './onnx.js';
import type { BenchShape } from './shapes.js';
import { timeRuns } from './timing.js';

/** The few pieces of the onnxruntime-node API used here. */
interface OrtTensor {
  data: unknown;
  dims: readonly number[];
}
interface OrtSession {
  run(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>;
  release?(): Promise<void>;
}
interface OrtModule {
  InferenceSession: { create(model: Uint8Array, options?: Record<string, unknown>): Promise<OrtSession> };
  Tensor: new (type: string, data: Float32Array, dims: readonly number[]) => OrtTensor;
  env?: { versions?: Record<string, string>; logLevel?: string };
}

export type AnchorGraph = 'mha' | 'matmul';

export interface AnchorVariant {
  graph: AnchorGraph;
  threads: number;
}

export const ANCHOR_VARIANTS: readonly AnchorVariant[] = [
  { graph: 'mha', threads: 1 },
  { graph: 'mha', threads: 2 },
  { graph: 'matmul', threads: 1 },
  { graph: 'matmul', threads: 2 },
];

/** "ort-mha/1t": the anchor's name in tables and JSON. */
export function anchorName(v: AnchorVariant): string {
  return `ort-${v.graph}/${v.threads}t`;
}

export interface LoadedOrt {
  ort?: OrtModule;
  version?: string;
  error?: string;
}

/** onnxruntime-node if it is installed and its native binding loads. */
export async function loadOrt(): Promise<LoadedOrt> {
  const r = await importOptional<OrtModule & { default?: OrtModule }>('onnxruntime-node');
  if (!r.installed) return { error: 'onnxruntime-node is not installed (pnpm add onnxruntime-node)' };
  if (!r.module) return { error: `onnxruntime-node failed to load: ${r.error}` };
  const ort = (r.module.InferenceSession ? r.module : r.module.default) as OrtModule | undefined;
  if (!ort?.InferenceSession) return { error: 'onnxruntime-node loaded without an InferenceSession' };
  return { ort, version: ort.env?.versions?.node ?? packageVersion('onnxruntime-node') };
}

/** Why an anchor cannot run a shape, or undefined if it can. */
export function anchorUnsupported(shape: BenchShape): string | undefined {
  if (shape.hq !== shape.hk) return 'the anchors take hq = hk only';
  if (shape.causal && shape.sq !== shape.sk) return 'the anchors align causal masks for sq = sk only';
  return undefined;
}

/** Sessions are made once per graph, thread count, mask and head layout (batch and lengths are symbolic). */
export class AnchorRunner {
  private sessions = new Map<string, Promise<OrtSession>>();
  private masks = new Map<string, OrtTensor>();

  constructor(private readonly ort: OrtModule) {}

  private session(v: AnchorVariant, spec: AttentionGraphSpec): Promise<OrtSession> {
    const key = `${v.graph}/${v.threads}/${spec.causal}/${spec.heads}/${spec.headDim}/${spec.scale}`;
    let s = this.sessions.get(key);
    if (!s) {
      const model = v.graph === 'mha' ? multiHeadAttentionModel(spec) : matmulSoftmaxModel(spec);
      s = this.ort.InferenceSession.create(model, {
        intraOpNumThreads: v.threads,
        interOpNumThreads: 1,
        executionMode: 'sequential',
        graphOptimizationLevel: 'all',
        logSeverityLevel: 3,
      });
      // A failed creation is not kept: each shape reports it.
      s.catch(() => this.sessions.delete(key));
      this.sessions.set(key, s);
    }
    return s;
  }

  /** The additive causal mask [sq, sk] of the plain graph: 0 where j <= i + sk - sq, else -1e30. */
  private causalMask(sq: number, sk: number): OrtTensor {
    const key = `${sq}x${sk}`;
    let m = this.masks.get(key);
    if (!m) {
      const data = new Float32Array(sq * sk);
      for (let i = 0; i < sq; i++) for (let j = i + sk - sq + 1; j < sk; j++) data[i * sk + j] = -1e30;
      m = new this.ort.Tensor('float32', data, [sq, sk]);
      this.masks.clear();
      this.masks.set(key, m);
    }
    return m;
  }

  /** Times one anchor on one shape: float32 inputs (the bshd buffers themselves) and its output. */
  async run(
    v: AnchorVariant,
    shape: BenchShape,
    inputs: BenchInputs,
    timing: { warmup: number; repeat: number },
  ): Promise<{ samples: number[]; out: Float32Array }> {
    const { batch, sq, sk, hq, d } = shape;
    const spec: AttentionGraphSpec = { heads: hq, headDim: d, scale: 1 / Math.sqrt(d), causal: shape.causal };
    const session = await this.session(v, spec);
    const T = this.ort.Tensor;
    const q = inputs.q.data as Float32Array;
    const k = inputs.k.data as Float32Array;
    const val = inputs.v.data as Float32Array;
    const feeds: Record<string, OrtTensor> =
      v.graph === 'mha'
        ? {
            query: new T('float32', q, [batch, sq, hq * d]),
            key: new T('float32', k, [batch, sk, hq * d]),
            value: new T('float32', val, [batch, sk, hq * d]),
          }
        : {
            query: new T('float32', q, [batch, sq, hq, d]),
            key: new T('float32', k, [batch, sk, hq, d]),
            value: new T('float32', val, [batch, sk, hq, d]),
            ...(shape.causal ? { mask: this.causalMask(sq, sk) } : {}),
          };
    const { samples, last } = await timeRuns(() => session.run(feeds), timing);
    return { samples, out: last.out.data as Float32Array };
  }

  async release(): Promise<void> {
    const all = [...this.sessions.values()];
    this.sessions.clear();
    this.masks.clear();
    await Promise.all(all.map((s) => s.then((x) => x.release?.()).catch(() => {})));
  }
}
