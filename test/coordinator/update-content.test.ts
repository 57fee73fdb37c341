// The streaming content check of an upload (coordinator/rounds/validate-update.ts
// UpdateContentCheck) against the whole-buffer check: the same verdict and the same L2 norm
// however the bytes are split (float32 values and the header cut across feeds), and the same
// error codes and messages for NaN/Inf, wrong tensors and truncated or foreign files.
import { describe, expect, it } from 'vitest';
import { encodeSafetensors } from '../../shared/safetensors.ts';
import { isFedloraError } from '../../shared/errors.ts';
import { UpdateContentCheck, validateUpdateBytes } from '../../coordinator/rounds/validate-update.ts';
import { jobLayout } from '../../coordinator/publish/layout.ts';
import { encodeDelta, fakeDelta, tinySpec } from './helpers.ts';

const layout = jobLayout(tinySpec()).update;

function streamed(buf: Uint8Array, cut: (at: number) => number): { norm: number } {
  const c = new UpdateContentCheck(layout, buf.byteLength, 'u');
  for (let at = 0; at < buf.byteLength; ) {
    const n = Math.max(1, Math.min(cut(at), buf.byteLength - at));
    c.feed(buf.slice(at, at + n)); // a copy: feeds at every byte alignment
    at += n;
  }
  return c.result();
}

function verdict(fn: () => unknown): string {
  try {
    fn();
    return 'ok';
  } catch (e) {
    if (!isFedloraError(e)) throw e;
    return `${e.code}: ${e.message}`;
  }
}

describe('UpdateContentCheck', () => {
  const flat = fakeDelta(layout, 's1', 1);
  const good = encodeDelta(layout, flat);
  let ref = 0;
  for (const x of validateUpdateBytes(good, layout, 'u')) ref += x * x;

  it.each([['1 byte', () => 1], ['3 bytes', () => 3], ['odd sizes', (at: number) => 1 + ((at * 7919) % 997)], ['one piece', () => 1 << 30]])('fed %s at a time: same norm as the whole buffer', (_n, cut) => {
    expect(streamed(good, cut).norm).toBeCloseTo(Math.sqrt(ref), 10);
  });

  it.each([NaN, Infinity, -Infinity])('%s: the same error as the whole-buffer check, naming tensor and element', (bad) => {
    const v = Float32Array.from(flat);
    v[layout.entries[1].offset + 3] = bad;
    const buf = encodeDelta(layout, v);
    const want = verdict(() => validateUpdateBytes(buf, layout, 'u'));
    expect(want).toBe(`FEDLORA_ERR_UPDATE_NONFINITE: u: tensor "${layout.entries[1].name}" element 3 is ${bad}`);
    expect(verdict(() => streamed(buf, () => 5))).toBe(want);
  });

  it('an unpadded header (tensors at odd offsets) fed through one reused Buffer: every NaN found and named', () => {
    // what the intake sees: Buffers that are views into bigger ones, reused by the reader
    const header: Record<string, unknown> = {};
    let off = 0;
    for (const e of layout.entries) {
      header[e.name] = { dtype: 'F32', shape: e.shape, data_offsets: [off, off + e.length * 4] };
      off += e.length * 4;
    }
    for (const pad of [0, 1, 2, 3]) {
      const json = Buffer.from(JSON.stringify(header) + ' '.repeat(pad));
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(json.length));
      for (const [t, i] of [[0, 0], [0, 1], [1, 31], [3, 15], [7, 0]]) {
        const v = Float32Array.from(flat);
        v[layout.entries[t].offset + i] = Number.NaN;
        const buf = Buffer.concat([len, json, Buffer.from(v.buffer)]);
        const c = new UpdateContentCheck(layout, buf.byteLength, 'u');
        const reused = Buffer.alloc(96 + 3).subarray(3); // never 4-byte aligned
        for (let at = 0; at < buf.byteLength; at += 96) {
          const n = buf.copy(reused, 0, at, at + 96);
          c.feed(reused.subarray(0, n));
        }
        expect(verdict(() => c.result())).toBe(`FEDLORA_ERR_UPDATE_NONFINITE: u: tensor "${layout.entries[t].name}" element ${i} is NaN`);
      }
    }
  });

  it('wrong tensors, truncated or foreign bytes: same codes as the whole-buffer check', () => {
    const e0 = layout.entries[0];
    const cases: Uint8Array[] = [
      encodeSafetensors({ [e0.name]: { dtype: 'F32', shape: e0.shape, data: new Float32Array(e0.length) } }), // missing tensors
      encodeSafetensors({ wrong: { dtype: 'F32', shape: [2], data: new Float32Array(2) } }),
      good.subarray(0, 6),
      Buffer.from('not a safetensors file at all'),
    ];
    for (const buf of cases) {
      const want = verdict(() => validateUpdateBytes(buf, layout, 'u'));
      expect(want).not.toBe('ok');
      expect(verdict(() => streamed(buf, () => 4)).split(':')[0]).toBe(want.split(':')[0]);
    }
    // fewer bytes than announced
    const c = new UpdateContentCheck(layout, good.byteLength, 'u');
    c.feed(good.subarray(0, good.byteLength - 8));
    expect(verdict(() => c.result())).toMatch(/^FEDLORA_ERR_UPDATE_INVALID: u: \d+ of \d+ bytes checked/);
  });
});
