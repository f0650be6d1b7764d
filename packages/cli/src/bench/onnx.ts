/**
 * A minimal ONNX model writer: just the protobuf fields of onnx.proto that the two anchor graphs need
 * (ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto, ValueInfoProto, TypeProto,
 * TensorShapeProto, OperatorSetIdProto), encoded by hand in the protobuf wire format. Field numbers are
 * those of onnx/onnx.proto (IR version 8).
 */

// ---------------------------------------------------------------------------------------------------
// Protobuf wire format.

const WIRE_VARINT = 0;
const WIRE_LEN = 2;
const WIRE_FIXED32 = 5;

class ProtoWriter {
  private chunks: number[] = [];
  private scratch = new DataView(new ArrayBuffer(4));

  /** A varint of a non-negative integer, or of a negative one as its 64-bit two's complement (10 bytes). */
  varint(n: number | bigint): this {
    let v = BigInt.asUintN(64, BigInt(n));
    while (v >= 0x80n) {
      this.chunks.push(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    this.chunks.push(Number(v));
    return this;
  }

  private tag(field: number, wire: number): this {
    return this.varint((field << 3) | wire);
  }

  int(field: number, n: number | bigint): this {
    return this.tag(field, WIRE_VARINT).varint(n);
  }

  float(field: number, x: number): this {
    this.tag(field, WIRE_FIXED32);
    this.scratch.setFloat32(0, x, true);
    for (let i = 0; i < 4; i++) this.chunks.push(this.scratch.getUint8(i));
    return this;
  }

  bytes(field: number, data: Uint8Array): this {
    this.tag(field, WIRE_LEN).varint(data.length);
    for (let i = 0; i < data.length; i++) this.chunks.push(data[i]);
    return this;
  }

  string(field: number, s: string): this {
    return this.bytes(field, new TextEncoder().encode(s));
  }

  message(field: number, build: (w: ProtoWriter) => void): this {
    const inner = new ProtoWriter();
    build(inner);
    return this.bytes(field, inner.finish());
  }

  finish(): Uint8Array {
    return Uint8Array.from(this.chunks);
  }
}

// ---------------------------------------------------------------------------------------------------
// The ONNX subset.

/** TensorProto.DataType values used here. */
export const OnnxType = { FLOAT: 1, INT64: 7, FLOAT16: 10, BFLOAT16: 16 } as const;

/** A dimension: a fixed size or a symbolic name (dim_param). */
export type Dim = number | string;

export interface ValueInfo {
  name: string;
  elemType: number;
  shape: Dim[];
}

export type AttributeValue =
  | { kind: 'int'; value: number }
  | { kind: 'float'; value: number }
  | { kind: 'ints'; value: number[] }
  | { kind: 'string'; value: string };

export interface Node {
  opType: string;
  inputs: string[];
  outputs: string[];
  name?: string;
  domain?: string;
  attributes?: Record<string, AttributeValue>;
}

/** An initializer holding float32 values. */
export interface FloatInitializer {
  name: string;
  dims: number[];
  values: Float32Array | number[];
}

export interface Graph {
  name: string;
  nodes: Node[];
  inputs: ValueInfo[];
  outputs: ValueInfo[];
  initializers?: FloatInitializer[];
}

export interface ModelOptions {
  /** Opset imports: '' is ai.onnx. */
  opsets: Record<string, number>;
  producer?: string;
  irVersion?: number;
}

// AttributeProto.AttributeType
const ATTR_FLOAT = 1;
const ATTR_INT = 2;
const ATTR_STRING = 3;
const ATTR_INTS = 7;

function writeAttribute(w: ProtoWriter, name: string, a: AttributeValue): void {
  w.string(1, name); // name
  switch (a.kind) {
    case 'float':
      w.float(2, a.value).int(20, ATTR_FLOAT); // f, type
      break;
    case 'int':
      w.int(3, a.value).int(20, ATTR_INT); // i, type
      break;
    case 'string':
      w.bytes(4, new TextEncoder().encode(a.value)).int(20, ATTR_STRING); // s, type
      break;
    case 'ints':
      for (const v of a.value) w.int(8, v); // ints (unpacked; parsers accept both)
      w.int(20, ATTR_INTS);
      break;
  }
}

function writeNode(w: ProtoWriter, n: Node): void {
  for (const i of n.inputs) w.string(1, i); // input
  for (const o of n.outputs) w.string(2, o); // output
  if (n.name) w.string(3, n.name); // name
  w.string(4, n.opType); // op_type
  for (const [name, a] of Object.entries(n.attributes ?? {}))
    w.message(5, (aw) => writeAttribute(aw, name, a));
  if (n.domain) w.string(7, n.domain); // domain
}

function writeValueInfo(w: ProtoWriter, v: ValueInfo): void {
  w.string(1, v.name); // name
  w.message(2, (type) =>
    // TypeProto.tensor_type
    type.message(1, (tensor) => {
      tensor.int(1, v.elemType); // elem_type
      tensor.message(2, (shape) => {
        for (const d of v.shape) {
          // TensorShapeProto.dim: dim_value (1) or dim_param (2)
          shape.message(1, (dim) => (typeof d === 'number' ? dim.int(1, d) : dim.string(2, d)));
        }
      });
    }),
  );
}

function writeInitializer(w: ProtoWriter, t: FloatInitializer): void {
  for (const d of t.dims) w.int(1, d); // dims
  w.int(2, OnnxType.FLOAT); // data_type
  w.string(8, t.name); // name
  const raw = new Uint8Array(t.values.length * 4);
  const view = new DataView(raw.buffer);
  for (let i = 0; i < t.values.length; i++) view.setFloat32(i * 4, t.values[i], true);
  w.bytes(9, raw); // raw_data (little-endian)
}

/** Serialises a ModelProto holding `graph`. */
export function encodeModel(graph: Graph, options: ModelOptions): Uint8Array {
  const w = new ProtoWriter();
  w.int(1, options.irVersion ?? 8); // ir_version
  w.string(2, options.producer ?? 'flashattn'); // producer_name
  w.message(7, (g) => {
    for (const n of graph.nodes) g.message(1, (nw) => writeNode(nw, n)); // node
    g.string(2, graph.name); // name
    for (const t of graph.initializers ?? []) g.message(5, (tw) => writeInitializer(tw, t)); // initializer
    for (const i of graph.inputs) g.message(11, (vw) => writeValueInfo(vw, i)); // input
    for (const o of graph.outputs) g.message(12, (vw) => writeValueInfo(vw, o)); // output
  });
  for (const [domain, version] of Object.entries(options.opsets)) {
    w.message(8, (o) => {
      if (domain) o.string(1, domain);
      o.int(2, version);
    });
  }
  return w.finish();
}

// ---------------------------------------------------------------------------------------------------
// The two anchor graphs. Both read the float32 bshd buffers of the flashattn tensors as they are
// (MultiHeadAttention sees them as [B, S, H·D], the plain graph as [B, S, H, D]) and write out in the
// same layout, so the same buffers feed every contender and the outputs are checked the same way.

export interface AttentionGraphSpec {
  heads: number;
  headDim: number;
  scale: number;
  causal: boolean;
}

/**
 * onnxruntime's com.microsoft MultiHeadAttention contrib op (a fused kernel on the CPU execution
 * provider). unidirectional = 1 is its causal mask (for Sq = Sk).
 */
export function multiHeadAttentionModel(spec: AttentionGraphSpec): Uint8Array {
  const hidden = spec.heads * spec.headDim;
  const io = (name: string, seq: string): ValueInfo => ({
    name,
    elemType: OnnxType.FLOAT,
    shape: ['batch', seq, hidden],
  });
  return encodeModel(
    {
      name: 'mha',
      nodes: [
        {
          opType: 'MultiHeadAttention',
          domain: 'com.microsoft',
          name: 'attention',
          inputs: ['query', 'key', 'value'],
          outputs: ['out'],
          attributes: {
            num_heads: { kind: 'int', value: spec.heads },
            scale: { kind: 'float', value: spec.scale },
            ...(spec.causal ? { unidirectional: { kind: 'int', value: 1 } } : {}),
          },
        },
      ],
      inputs: [io('query', 'seq_q'), io('key', 'seq_k'), io('value', 'seq_k')],
      outputs: [io('out', 'seq_q')],
    },
    { opsets: { '': 17, 'com.microsoft': 1 } },
  );
}

/**
 * The plain graph a framework exports: q, k, v [B, S, H, D] transposed to [B, H, S, D] (k to
 * [B, H, D, S]), q·scale, MatMul(q, kᵀ), an additive
 * mask input when causal, Softmax over keys, MatMul with v, Transpose back. It materialises S and P.
 * The causal mask is an input `mask` [Sq, Sk] of 0 and -1e30 (broadcast over batch and heads).
 */
export function matmulSoftmaxModel(spec: AttentionGraphSpec): Uint8Array {
  const { heads, headDim } = spec;
  const nodes: Node[] = [
    {
      opType: 'Transpose',
      inputs: ['query'],
      outputs: ['qt'],
      attributes: { perm: { kind: 'ints', value: [0, 2, 1, 3] } },
    },
    {
      opType: 'Transpose',
      inputs: ['key'],
      outputs: ['kt'],
      attributes: { perm: { kind: 'ints', value: [0, 2, 3, 1] } },
    },
    {
      opType: 'Transpose',
      inputs: ['value'],
      outputs: ['vt'],
      attributes: { perm: { kind: 'ints', value: [0, 2, 1, 3] } },
    },
    { opType: 'Mul', inputs: ['qt', 'scale'], outputs: ['qs'] },
    { opType: 'MatMul', inputs: ['qs', 'kt'], outputs: ['scores'] },
  ];
  let logits = 'scores';
  if (spec.causal) {
    nodes.push({ opType: 'Add', inputs: ['scores', 'mask'], outputs: ['masked'] });
    logits = 'masked';
  }
  nodes.push(
    {
      opType: 'Softmax',
      inputs: [logits],
      outputs: ['probs'],
      attributes: { axis: { kind: 'int', value: -1 } },
    },
    { opType: 'MatMul', inputs: ['probs', 'vt'], outputs: ['o4t'] },
    {
      opType: 'Transpose',
      inputs: ['o4t'],
      outputs: ['out'],
      attributes: { perm: { kind: 'ints', value: [0, 2, 1, 3] } },
    },
  );
  const io = (name: string, seq: string, h: Dim): ValueInfo => ({
    name,
    elemType: OnnxType.FLOAT,
    shape: ['batch', seq, h, headDim],
  });
  const inputs = [io('query', 'seq_q', heads), io('key', 'seq_k', heads), io('value', 'seq_k', heads)];
  if (spec.causal) inputs.push({ name: 'mask', elemType: OnnxType.FLOAT, shape: ['seq_q', 'seq_k'] });
  return encodeModel(
    {
      name: 'matmul_softmax_matmul',
      nodes,
      inputs,
      outputs: [io('out', 'seq_q', heads)],
      initializers: [{ name: 'scale', dims: [], values: [spec.scale] }],
    },
    { opsets: { '': 17 } },
  );
}
