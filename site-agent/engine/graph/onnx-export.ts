// IR -> ONNX ModelProto bytes. A hand-coded encoder on protobufjs' Writer for the subset of onnx.proto
// we emit (field numbers from onnx/onnx.proto, noted next to each write). Base weights become
// initializers with data_location = EXTERNAL whose location/offset/length point into the
// safetensors files, so the .onnx stays small and no weight is copied through JS memory.

import protobuf from 'protobufjs/minimal.js';
import type { AttrValue, DType, Graph, Initializer, Node, Value } from './ir.ts';

const { Writer } = protobuf;
type W = protobuf.Writer;

export const ONNX_DTYPE: Record<DType, number> = { float32: 1, uint8: 2, int32: 6, int64: 7, bool: 9, float16: 10, bfloat16: 16 };
const OPSET = 18;
/** ONNX Runtime's contrib ops live in their own domain (opset 1); every other op is ai.onnx. */
const MS_DOMAIN = 'com.microsoft';
const MS_OPS = new Set(['MatMulNBits', 'GatherBlockQuantized']);
const IR_VERSION = 8;

// Wire types: 0 = varint, 2 = length-delimited, 5 = 32-bit.
const tag = (field: number, wire: number) => (field << 3) | wire;

function sub(w: W, field: number, fill: (w: W) => void): void {
  w.uint32(tag(field, 2)).fork();
  fill(w);
  w.ldelim();
}

function writeTypeProto(w: W, v: Value): void {
  // TypeProto.tensor_type = 1 { elem_type = 1, shape = 2 { dim = 1 { dim_value = 1 } } }
  sub(w, 1, (t) => {
    t.uint32(tag(1, 0)).int32(ONNX_DTYPE[v.dtype]);
    sub(t, 2, (s) => {
      for (const d of v.shape) sub(s, 1, (dim) => dim.uint32(tag(1, 0)).int64(d));
    });
  });
}

function writeValueInfo(w: W, field: number, v: Value): void {
  // ValueInfoProto { name = 1, type = 2 }
  sub(w, field, (x) => {
    x.uint32(tag(1, 2)).string(v.name);
    sub(x, 2, (t) => writeTypeProto(t, v));
  });
}

function writeTensor(w: W, field: number, t: Initializer, externalName: (file: string) => string): void {
  // TensorProto { dims = 1, data_type = 2, name = 8, raw_data = 9, external_data = 13, data_location = 14 }
  sub(w, field, (x) => {
    for (const d of t.shape) x.uint32(tag(1, 0)).int64(d);
    x.uint32(tag(2, 0)).int32(ONNX_DTYPE[t.dtype]);
    x.uint32(tag(8, 2)).string(t.name);
    if (t.data.kind === 'raw') {
      x.uint32(tag(9, 2)).bytes(t.data.bytes);
    } else {
      const kv: [string, string][] = [
        ['location', externalName(t.data.file)],
        ['offset', String(t.data.offset)],
        ['length', String(t.data.length)],
      ];
      // StringStringEntryProto { key = 1, value = 2 }
      for (const [k, v] of kv) sub(x, 13, (e) => e.uint32(tag(1, 2)).string(k).uint32(tag(2, 2)).string(v));
      x.uint32(tag(14, 0)).int32(1); // EXTERNAL
    }
  });
}

function writeAttr(w: W, name: string, v: AttrValue): void {
  // AttributeProto { name = 1, f = 2, i = 3, s = 4, floats = 7, ints = 8, type = 20 }
  // AttributeType: FLOAT = 1, INT = 2, STRING = 3, FLOATS = 6, INTS = 7
  sub(w, 5, (a) => {
    a.uint32(tag(1, 2)).string(name);
    if (typeof v === 'number') {
      a.uint32(tag(3, 0)).int64(v);
      a.uint32(tag(20, 0)).int32(2);
    } else if (typeof v === 'string') {
      a.uint32(tag(4, 2)).bytes(Buffer.from(v, 'utf8'));
      a.uint32(tag(20, 0)).int32(3);
    } else if (Array.isArray(v)) {
      for (const i of v) a.uint32(tag(8, 0)).int64(i);
      a.uint32(tag(20, 0)).int32(7);
    } else if ('float' in v) {
      a.uint32(tag(2, 5)).float(v.float);
      a.uint32(tag(20, 0)).int32(1);
    } else {
      for (const f of v.floats) a.uint32(tag(7, 5)).float(f);
      a.uint32(tag(20, 0)).int32(6);
    }
  });
}

function writeNode(w: W, n: Node, i: number): void {
  // NodeProto { input = 1, output = 2, name = 3, op_type = 4, attribute = 5, domain = 7 }
  sub(w, 1, (x) => {
    for (const s of n.inputs) x.uint32(tag(1, 2)).string(s);
    for (const s of n.outputs) x.uint32(tag(2, 2)).string(s);
    x.uint32(tag(3, 2)).string(`n${i}_${n.op}`);
    x.uint32(tag(4, 2)).string(n.op);
    for (const [k, v] of Object.entries(n.attrs)) writeAttr(x, k, v);
    if (MS_OPS.has(n.op)) x.uint32(tag(7, 2)).string(MS_DOMAIN);
  });
}

/** Encode a ModelProto. `externalName` maps an absolute weight file to the location written in the
 *  model (a path relative to the folder the .onnx is loaded from). */
export function encodeModel(g: Graph, externalName: (file: string) => string = (f) => f): Uint8Array {
  const w = Writer.create();
  w.uint32(tag(1, 0)).int64(IR_VERSION); // ir_version = 1
  w.uint32(tag(2, 2)).string('fedlora'); // producer_name = 2
  sub(w, 7, (x) => {
    // GraphProto { node = 1, name = 2, initializer = 5, input = 11, output = 12 }
    g.nodes.forEach((n, i) => writeNode(x, n, i));
    x.uint32(tag(2, 2)).string(g.name);
    for (const t of g.initializers) writeTensor(x, 5, t, externalName);
    for (const v of g.inputs) writeValueInfo(x, 11, v);
    for (const v of g.outputs) writeValueInfo(x, 12, v);
  });
  // opset_import = 8 { domain = 1, version = 2 }
  sub(w, 8, (o) => o.uint32(tag(1, 2)).string('').uint32(tag(2, 0)).int64(OPSET));
  if (g.nodes.some((n) => MS_OPS.has(n.op))) sub(w, 8, (o) => o.uint32(tag(1, 2)).string(MS_DOMAIN).uint32(tag(2, 0)).int64(1));
  return w.finish();
}
