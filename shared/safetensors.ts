// safetensors: an 8-byte little-endian header length, a JSON header
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then the bytes.
// We read only the header (weights stay in the file: ONNX external data points into it) and
// write files from in-memory tensors (adapters, updates); checkpoints of any size go through the
// streaming writer in safetensors-writer.ts.

import { openSync, readSync, closeSync, fstatSync } from 'node:fs';
import { fail } from './errors.ts';
import { safetensorsLayout, writeSafetensorsStream } from './safetensors-writer.ts';

import { DTYPE_BYTES, type SafetensorsDtype } from './safetensors-dtypes.ts';

export { DTYPE_BYTES, type SafetensorsDtype };

export interface SafetensorsEntry {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** Absolute byte offset of the tensor's data in the file. */
  offset: number;
  length: number;
}

export interface SafetensorsHeader {
  file: string;
  headerLength: number;
  dataStart: number;
  entries: Map<string, SafetensorsEntry>;
  metadata: Record<string, string>;
}

/** Upper bound on a header: real checkpoints have headers of a few hundred KiB. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export function parseSafetensorsHeader(bytes: Uint8Array, fileSize: number, file: string): SafetensorsHeader {
  if (bytes.length < 8) throw fail('FEDLORA_ERR_SAFETENSORS', `${file}: file is shorter than the 8-byte header length`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = Number(view.getBigUint64(0, true));
  if (n > MAX_HEADER_BYTES || 8 + n > fileSize) {
    throw fail('FEDLORA_ERR_SAFETENSORS', `${file}: header length ${n} is larger than the file (${fileSize} bytes) or the 100 MiB limit`);
  }
  if (bytes.length < 8 + n) throw fail('FEDLORA_ERR_SAFETENSORS', `${file}: truncated header`);
  let json: Record<string, any>;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + n)));
  } catch (e) {
    throw fail('FEDLORA_ERR_SAFETENSORS', `${file}: header is not valid UTF-8 JSON (${(e as Error).message})`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw fail('FEDLORA_ERR_SAFETENSORS', `${file}: header is not a JSON object`);
  }
  const dataStart = 8 + n;
  const entries = new Map<string, SafetensorsEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, v] of Object.entries(json)) {
    if (name === '__metadata__') {
      if (v !== null && (typeof v !== 'object' || Array.isArray(v))) throw fail('FEDLORA_ERR_SAFETENSORS', `${file}: __metadata__ is not an object`);
      metadata = (v ?? {}) as Record<string, string>;
      continue;
    }
    const where = `${file}: tensor "${name}"`;
    if (!v || typeof v !== 'object') throw fail('FEDLORA_ERR_SAFETENSORS', `${where}: entry is not an object`);
    if (typeof v.dtype !== 'string' || !Object.hasOwn(DTYPE_BYTES, v.dtype)) {
      throw fail('FEDLORA_ERR_UNSUPPORTED_DTYPE', `${where}: dtype ${JSON.stringify(v.dtype) ?? 'undefined'} is not supported`);
    }
    const dtype = v.dtype as SafetensorsDtype;
    const shape = v.shape;
    if (!Array.isArray(shape) || !shape.every((d: unknown) => Number.isInteger(d) && (d as number) >= 0)) {
      throw fail('FEDLORA_ERR_SAFETENSORS', `${where}: shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
    }
    const offs = v.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((d: unknown) => Number.isInteger(d) && (d as number) >= 0) || offs[1] < offs[0]) {
      throw fail('FEDLORA_ERR_SAFETENSORS', `${where}: data_offsets ${JSON.stringify(offs)} are invalid`);
    }
    const expected = shape.reduce((a: number, b: number) => a * b, 1) * DTYPE_BYTES[dtype];
    if (offs[1] - offs[0] !== expected) {
      throw fail('FEDLORA_ERR_SAFETENSORS', `${where}: ${offs[1] - offs[0]} bytes for shape [${shape}] of ${dtype} (expected ${expected})`);
    }
    if (dataStart + offs[1] > fileSize) {
      throw fail('FEDLORA_ERR_SAFETENSORS', `${where}: data ends at byte ${dataStart + offs[1]}, past the end of the file (${fileSize} bytes; truncated?)`);
    }
    entries.set(name, { name, dtype, shape, offset: dataStart + offs[0], length: expected });
  }
  return { file, headerLength: n, dataStart, entries, metadata };
}

/** Read only the header of a safetensors file (a few reads, no matter the file size). */
export function readSafetensorsHeader(file: string): SafetensorsHeader {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (e) {
    throw fail('FEDLORA_ERR_MODEL_FILES', `${file}: cannot open (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try {
    const size = fstatSync(fd).size;
    const lenBuf = Buffer.alloc(8);
    if (readSync(fd, lenBuf, 0, 8, 0) < 8) throw fail('FEDLORA_ERR_SAFETENSORS', `${file}: file is shorter than the 8-byte header length`);
    const n = Number(lenBuf.readBigUInt64LE(0));
    if (n > MAX_HEADER_BYTES || 8 + n > size) {
      throw fail('FEDLORA_ERR_SAFETENSORS', `${file}: header length ${n} is larger than the file (${size} bytes) or the 100 MiB limit`);
    }
    const buf = Buffer.alloc(8 + n);
    readSync(fd, buf, 0, 8 + n, 0);
    return parseSafetensorsHeader(buf, size, file);
  } finally {
    closeSync(fd);
  }
}

/** Read one tensor's raw bytes (for small tensors: adapters, norms, biases). */
export function readTensorBytes(entry: SafetensorsEntry, file = ''): Buffer {
  const path = file || (entry as SafetensorsEntry & { file?: string }).file;
  if (!path) throw fail('FEDLORA_ERR_INTERNAL', `readTensorBytes: no file for tensor ${entry.name}`);
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(entry.length);
    const got = readSync(fd, buf, 0, entry.length, entry.offset);
    if (got !== entry.length) throw fail('FEDLORA_ERR_SAFETENSORS', `${path}: tensor "${entry.name}" truncated (${got} of ${entry.length} bytes)`);
    return buf;
  } finally {
    closeSync(fd);
  }
}

/** Decode raw little-endian bytes of F32/F16/BF16 into float32. */
export function toFloat32(bytes: Uint8Array, dtype: SafetensorsDtype): Float32Array {
  const n = bytes.byteLength / DTYPE_BYTES[dtype];
  if (dtype === 'F32') {
    // an aligned copy (the bytes may start at any offset); typed arrays are little-endian here like the file
    return new Float32Array(new Uint8Array(bytes).buffer, 0, n);
  }
  const out = new Float32Array(n);
  const half = new Uint16Array(new Uint8Array(bytes).buffer); // aligned copy; typed arrays are little-endian here like the file
  if (dtype === 'BF16') {
    const u32 = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) u32[i] = half[i] << 16;
  } else if (dtype === 'F16') {
    for (let i = 0; i < n; i++) out[i] = halfToFloat(half[i]);
  } else {
    throw fail('FEDLORA_ERR_UNSUPPORTED_DTYPE', `cannot convert ${dtype} to float32`);
  }
  return out;
}

function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 -> IEEE half, round to nearest even. */
export function floatToHalf(x: number): number {
  f32[0] = x;
  const b = u32[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && h & 1)) h++;
    return sign | h;
  }
  let h = sign | (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
  return h;
}

/** float32 -> bfloat16, round to nearest even (what torch does). */
export function floatToBf16(x: number): number {
  f32[0] = x;
  const b = u32[0];
  if ((b & 0x7f800000) === 0x7f800000 && b & 0x7fffff) return (b >>> 16) | 0x40;
  const rounded = b + 0x7fff + ((b >>> 16) & 1);
  return (rounded >>> 16) & 0xffff;
}

export interface TensorToWrite {
  dtype: 'F32' | 'F16' | 'BF16' | 'I64' | 'I32';
  shape: number[];
  /** float32 values (converted to dtype on write) or raw bytes already in dtype. */
  data: Float32Array | Uint8Array | BigInt64Array | Int32Array;
}

/** Serialise tensors to safetensors bytes (keys sorted, 8-byte aligned header like the Rust crate);
 *  in memory, for adapters and updates (files: writeSafetensors). */
export function encodeSafetensors(tensors: Map<string, TensorToWrite> | Record<string, TensorToWrite>, metadata?: Record<string, string>): Buffer {
  const map = tensors instanceof Map ? tensors : new Map(Object.entries(tensors));
  const { header, order } = safetensorsLayout([...map].map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape })), metadata);
  return Buffer.concat([header, ...order.map((t) => tensorBytes(map.get(t.name)!, t.name))]);
}

function tensorBytes(t: TensorToWrite, name: string): Uint8Array {
  const count = t.shape.reduce((a, b) => a * b, 1);
  if (t.data instanceof Float32Array) {
    if (t.data.length !== count) throw fail('FEDLORA_ERR_SHAPE', `tensor "${name}": ${t.data.length} values for shape [${t.shape}]`);
    if (t.dtype !== 'F32' && t.dtype !== 'F16' && t.dtype !== 'BF16') throw fail('FEDLORA_ERR_UNSUPPORTED_DTYPE', `tensor "${name}": float values cannot be written as ${t.dtype}`);
    return encodeFloats(t.data, t.dtype);
  }
  const raw = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  if (raw.byteLength !== count * DTYPE_BYTES[t.dtype]) throw fail('FEDLORA_ERR_SHAPE', `tensor "${name}": ${raw.byteLength} bytes for shape [${t.shape}] of ${t.dtype}`);
  return raw;
}

/** float32 values as little-endian F32, F16 or BF16 bytes (round to nearest even). */
export function encodeFloats(values: Float32Array, dtype: 'F32' | 'F16' | 'BF16'): Uint8Array {
  if (dtype === 'F32') return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  const out = new Uint16Array(values.length);
  if (dtype === 'BF16') {
    const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
    for (let i = 0; i < out.length; i++) {
      const b = bits[i];
      // NaN stays a quiet NaN; everything else rounds to nearest even on the dropped 16 bits
      out[i] = (b & 0x7f800000) === 0x7f800000 && b & 0x7fffff ? (b >>> 16) | 0x40 : ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
    }
  } else {
    for (let i = 0; i < out.length; i++) out[i] = floatToHalf(values[i]);
  }
  return new Uint8Array(out.buffer);
}

/** Write atomically (temp file + rename) so a crash never leaves a half-written file; streamed,
 *  so files past 2 GiB are fine. */
export function writeSafetensors(file: string, tensors: Map<string, TensorToWrite> | Record<string, TensorToWrite>, metadata?: Record<string, string>): void {
  const map = tensors instanceof Map ? tensors : new Map(Object.entries(tensors));
  const specs = [...map].map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape }));
  writeSafetensorsStream(file, specs, (spec, write) => write(tensorBytes(map.get(spec.name)!, spec.name)), metadata);
}

/** Decode a whole safetensors buffer into float32 tensors (adapters, updates: small files). */
export function decodeSafetensorsF32(buf: Uint8Array, name = '<buffer>'): { tensors: Map<string, { shape: number[]; data: Float32Array; dtype: SafetensorsDtype }>; metadata: Record<string, string> } {
  const h = parseSafetensorsHeader(buf, buf.byteLength, name);
  const tensors = new Map<string, { shape: number[]; data: Float32Array; dtype: SafetensorsDtype }>();
  for (const e of h.entries.values()) {
    if (e.dtype !== 'F32' && e.dtype !== 'F16' && e.dtype !== 'BF16') {
      throw fail('FEDLORA_ERR_UNSUPPORTED_DTYPE', `${name}: tensor "${e.name}" has dtype ${e.dtype}; adapters must be F32, F16 or BF16`);
    }
    tensors.set(e.name, { shape: e.shape, dtype: e.dtype, data: toFloat32(buf.subarray(e.offset, e.offset + e.length), e.dtype) });
  }
  return { tensors, metadata: h.metadata };
}
