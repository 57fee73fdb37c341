// Content checks of an uploaded update (after its bytes and hash are verified): it must be a
// safetensors file whose tensors are EXACTLY the job's update layout (names, shapes, F32) and
// hold only finite numbers. A job that accepts lower site ranks (lora.min_site_r < r) also takes
// the same tensors at a rank k in min_site_r..r that the file's metadata declares (lora_r, inside
// the signed bytes). Two forms of the same rules:
//   UpdateContentCheck  fed the bytes in order while they arrive (the intake streams a whole
//                       upload through it, so nothing is re-read at the end); gives the L2 norm
//   validateUpdateBytes a whole buffer; gives the flat vector in the canonical layout
import { endianness } from 'node:os';
import { fail, type FedloraError } from '../../shared/errors.ts';
import { parseSafetensorsHeader, type SafetensorsHeader } from '../../shared/safetensors.ts';
import { layoutAtRank } from '../../shared/lora/rank.ts';
import type { AdapterLayout } from '../../shared/tensors.ts';
import { sumOfSquares, sumOfSquaresBytes } from '../strategies/f32-kernels.ts';

// Float32Array views over file bytes are little-endian only on a little-endian host.
if (endianness() !== 'LE') throw new Error('fedlora coordinator: update validation needs a little-endian host');

function parseHeader(bytes: Uint8Array, size: number, name: string): SafetensorsHeader {
  try {
    return parseSafetensorsHeader(bytes, size, name);
  } catch (e) {
    const why = String((e as Error)?.message ?? e);
    throw fail('FEDLORA_ERR_UPDATE_INVALID', `${name}: not a safetensors file: ${why.startsWith(`${name}: `) ? why.slice(name.length + 2) : why}`);
  }
}

/** The layouts an update of a job may have: its own, or the same tensors at a site's lower rank. */
export interface UpdateShapes {
  layout: AdapterLayout;
  jobRank: number;
  /** lora.min_site_r (jobRank when the job has every site train its rank). */
  minSiteRank: number;
}

/** The layout the header's metadata declares (lora_r; absent: the job's rank), if the job accepts
 *  it; loraR null for the job's rank. A bare layout accepts only itself. */
export function layoutForHeader(header: SafetensorsHeader, shapes: AdapterLayout | UpdateShapes, name: string): { layout: AdapterLayout; loraR: number | null } {
  if (!('jobRank' in shapes)) return { layout: shapes, loraR: null };
  const declared = header.metadata.lora_r;
  if (declared === undefined || Number(declared) === shapes.jobRank) return { layout: shapes.layout, loraR: null };
  const k = Number(declared);
  if (!Number.isInteger(k) || k < shapes.minSiteRank || k > shapes.jobRank) {
    const accepts = shapes.minSiteRank < shapes.jobRank ? `ranks ${shapes.minSiteRank}..${shapes.jobRank} (lora.min_site_r..lora.r)` : `only its rank ${shapes.jobRank} (no lora.min_site_r below r)`;
    throw fail('FEDLORA_ERR_SHAPE', `${name}: the update declares LoRA rank ${JSON.stringify(declared)} (metadata lora_r); the job accepts ${accepts}`);
  }
  return { layout: layoutAtRank(shapes.layout, k), loraR: k };
}

/** The header must list exactly the layout's tensors, with its shapes, as F32. */
export function checkUpdateHeader(header: SafetensorsHeader, layout: AdapterLayout, name: string): void {
  const expected = new Map(layout.entries.map((e) => [e.name, e]));
  for (const n of header.entries.keys()) {
    if (!expected.has(n)) throw fail('FEDLORA_ERR_UPDATE_INVALID', `${name}: unexpected tensor "${n}" (not in the job's adapter layout)`);
  }
  for (const e of layout.entries) {
    const t = header.entries.get(e.name);
    if (!t) throw fail('FEDLORA_ERR_UPDATE_INVALID', `${name}: missing tensor "${e.name}"`);
    if (t.shape.length !== e.shape.length || t.shape.some((d, i) => d !== e.shape[i])) {
      throw fail('FEDLORA_ERR_SHAPE', `${name}: tensor "${e.name}" has shape [${t.shape}], expected [${e.shape}]`);
    }
    if (t.dtype !== 'F32') throw fail('FEDLORA_ERR_UNSUPPORTED_DTYPE', `${name}: tensor "${e.name}" has dtype ${t.dtype}, expected F32`);
  }
}

/** The error for the first NaN/Inf in `v` (element `first` + i of tensor `tensor`), if any. */
function nonFinite(v: Float32Array, name: string, tensor: string, first: number): FedloraError | undefined {
  for (let i = 0; i < v.length; i++) {
    if (!Number.isFinite(v[i])) return fail('FEDLORA_ERR_UPDATE_NONFINITE', `${name}: tensor "${tensor}" element ${first + i} is ${v[i]}`);
  }
  return undefined;
}

/** Little-endian float32 bytes as a Float32Array (a copy unless 4-byte aligned in memory). */
function floats(bytes: Uint8Array): Float32Array {
  if (bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  return new Float32Array(Uint8Array.prototype.slice.call(bytes).buffer); // (Buffer#slice would not copy)
}

interface Segment { name: string; start: number; end: number }

/**
 * Streaming form: feed() the update's bytes in order (any split), then result(). The first
 * problem is kept, not thrown, so the intake can report the whole-payload hash first (a
 * mismatch there means "send again", a content problem "rejected") exactly as the whole-file
 * check does.
 */
export class UpdateContentCheck {
  private pos = 0;
  private head: Uint8Array[] = [];
  private headBytes = 0;
  private segments: Segment[] | undefined;
  private seg = 0;
  private readonly carry = new Uint8Array(4);
  private carryLen = 0;
  private sum = 0;
  private error: FedloraError | undefined;
  private loraR: number | null = null;

  constructor(private readonly shapes: AdapterLayout | UpdateShapes, private readonly size: number, private readonly name: string) {}

  feed(bytes: Uint8Array): void {
    const at = this.pos;
    this.pos += bytes.byteLength;
    if (this.error) return;
    try {
      if (!this.segments) {
        this.head.push(Uint8Array.prototype.slice.call(bytes)); // a copy: callers reuse their buffers
        this.headBytes += bytes.byteLength;
        if (!this.headerComplete()) return;
        const all = Buffer.concat(this.head);
        this.head = [];
        const header = parseHeader(all, this.size, this.name);
        const { layout, loraR } = layoutForHeader(header, this.shapes, this.name);
        checkUpdateHeader(header, layout, this.name);
        this.loraR = loraR;
        this.segments = [...header.entries.values()].map((t) => ({ name: t.name, start: t.offset, end: t.offset + t.length })).sort((a, b) => a.start - b.start);
        this.data(all, 0);
        return;
      }
      this.data(bytes, at);
    } catch (e) {
      this.error = e as FedloraError;
    }
  }

  private headerComplete(): boolean {
    if (this.headBytes < 8) return this.headBytes >= this.size;
    const first = Buffer.concat(this.head).subarray(0, 8);
    const n = Number(first.readBigUInt64LE(0));
    return this.headBytes >= Math.min(this.size, 8 + n);
  }

  /** Sum the squares of the tensor bytes in [at, at + bytes.length). */
  private data(bytes: Uint8Array, at: number): void {
    const segs = this.segments!;
    const end = at + bytes.byteLength;
    while (this.seg < segs.length && segs[this.seg].start < end) {
      const s = segs[this.seg];
      const from = Math.max(s.start, at);
      const to = Math.min(s.end, end);
      if (from < to) this.tensorBytes(s, bytes.subarray(from - at, to - at), from);
      if (s.end > end) return;
      this.seg++;
    }
  }

  private tensorBytes(s: Segment, b: Uint8Array, at: number): void {
    let i = 0;
    if (this.carryLen > 0) {
      const take = Math.min(4 - this.carryLen, b.byteLength);
      this.carry.set(b.subarray(0, take), this.carryLen);
      this.carryLen += take;
      i = take;
      if (this.carryLen < 4) return;
      this.carryLen = 0;
      this.block(s, this.carry, at + i - 4);
    }
    const whole = (b.byteLength - i) & ~3;
    if (whole > 0) this.block(s, b.subarray(i, i + whole), at + i);
    i += whole;
    if (i < b.byteLength) {
      this.carry.set(b.subarray(i));
      this.carryLen = b.byteLength - i;
    }
  }

  /** Whole float32 values of tensor `s` starting at file offset `at`. */
  private block(s: Segment, bytes: Uint8Array, at: number): void {
    const q = sumOfSquaresBytes(bytes);
    if (!Number.isFinite(q)) throw nonFinite(floats(bytes), this.name, s.name, (at - s.start) / 4)!;
    this.sum += q;
  }

  /** After every byte was fed: the update's L2 norm and its LoRA rank when below the job's
   *  (null: the job's), or the first problem found (thrown). */
  result(): { norm: number; loraR: number | null } {
    if (this.error) throw this.error;
    if (!this.segments) {
      parseHeader(Buffer.concat(this.head), this.size, this.name); // throws: truncated
      throw fail('FEDLORA_ERR_UPDATE_INVALID', `${this.name}: not a safetensors file: truncated header`);
    }
    if (this.pos < this.size) throw fail('FEDLORA_ERR_UPDATE_INVALID', `${this.name}: ${this.pos} of ${this.size} bytes checked`);
    return { norm: Math.sqrt(this.sum), loraR: this.loraR };
  }
}

/** Whole-buffer form: the flat vector in the canonical layout (throws on the first problem). */
export function validateUpdateBytes(buf: Uint8Array, layout: AdapterLayout, name: string): Float32Array {
  const header = parseHeader(buf, buf.byteLength, name);
  checkUpdateHeader(header, layout, name);
  const out = new Float32Array(layout.total);
  const outBytes = new Uint8Array(out.buffer);
  for (const e of layout.entries) {
    const t = header.entries.get(e.name)!;
    outBytes.set(buf.subarray(t.offset, t.offset + t.length), e.offset * 4);
    const v = out.subarray(e.offset, e.offset + e.length);
    if (!Number.isFinite(sumOfSquares(v))) throw nonFinite(v, name, e.name, 0)!;
  }
  return out;
}
