import { fromFloat32 } from '@flashattn/core';
import { describe, expect, it } from 'vitest';
import { ANCHOR_VARIANTS, AnchorRunner, loadOrt } from '../src/bench/anchors.js';
import { RowReference, sampleRows } from '../src/bench/check.js';
import { makeInputs } from '../src/bench/data.js';
import { encodeModel, OnnxType } from '../src/bench/onnx.js';
import type { BenchShape } from '../src/bench/shapes.js';

describe('the ONNX writer', () => {
  it('encodes the protobuf wire format (field tags, varints, negative int64, fixed32 floats)', () => {
    const bytes = encodeModel(
      {
        name: 'g',
        nodes: [
          {
            opType: 'Softmax',
            inputs: ['x'],
            outputs: ['y'],
            attributes: { axis: { kind: 'int', value: -1 } },
          },
        ],
        inputs: [{ name: 'x', elemType: OnnxType.FLOAT, shape: ['n', 3] }],
        outputs: [{ name: 'y', elemType: OnnxType.FLOAT, shape: ['n', 3] }],
        initializers: [{ name: 's', dims: [], values: [0.5] }],
      },
      { opsets: { '': 17 } },
    );
    // ModelProto.ir_version = 8: tag (1 << 3 | 0) = 0x08, value 8.
    expect([...bytes.subarray(0, 2)]).toEqual([0x08, 8]);
    const hex = Buffer.from(bytes).toString('hex');
    // axis = -1 as a 10-byte varint.
    expect(hex).toContain(`18${'ff'.repeat(9)}01`);
    // 0.5f little-endian raw data.
    expect(hex).toContain('0000003f');
    // opset_import { version: 17 }: field 8, length 2, (2 << 3 | 0) = 0x10, 17.
    expect(hex.endsWith('42021011')).toBe(true);
  });
});

const ort = await loadOrt();

describe.skipIf(!ort.ort)('onnxruntime-node anchors (built in code)', () => {
  for (const causal of [false, true]) {
    it(`MultiHeadAttention and MatMul-Softmax-MatMul agree with float64 (causal ${causal})`, async () => {
      const shape: BenchShape = { kind: 'prefill', batch: 2, sq: 24, sk: 24, hq: 3, hk: 3, d: 16, causal };
      const inputs = makeInputs(shape, 'float32');
      const ref = new RowReference(inputs.q, inputs.k, inputs.v, { causal }, sampleRows(shape, 1000));
      const runner = new AnchorRunner(ort.ort!);
      try {
        for (const v of ANCHOR_VARIANTS) {
          const { samples, out } = await runner.run(v, shape, inputs, { warmup: 0, repeat: 2 });
          expect(samples).toHaveLength(2);
          const r = ref.checkForward(fromFloat32(out, 'float32', inputs.q.shape));
          expect(r.maxError).toBeLessThan(1e-5);
        }
      } finally {
        await runner.release();
      }
    });
  }
});
