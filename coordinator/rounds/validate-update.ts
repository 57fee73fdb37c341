// Content checks of an uploaded update (after its bytes and hash are verified): it must be a
// safetensors file whose tensors are EXACTLY the job's update layout (names, shapes, F32) and
// hold only finite numbers. Returns the flat vector in the canonical layout.
import { readFileSync } from 'node:fs';
import { fail } from '../../shared/errors.ts';
import { parseSafetensorsHeader, toFloat32 } from '../../shared/safetensors.ts';
import type { AdapterLayout } from '../../shared/tensors.ts';

export function validateUpdateBytes(buf: Uint8Array, layout: AdapterLayout, name: string): Float32Array {
  let header;
  try {
    header = parseSafetensorsHeader(buf, buf.byteLength, name);
  } catch (e) {
    const why = String((e as Error)?.message ?? e);
    throw fail('FEDLORA_ERR_UPDATE_INVALID', `${name}: not a safetensors file: ${why.startsWith(`${name}: `) ? why.slice(name.length + 2) : why}`);
  }
  const expected = new Map(layout.entries.map((e) => [e.name, e]));
  for (const n of header.entries.keys()) {
    if (!expected.has(n)) throw fail('FEDLORA_ERR_UPDATE_INVALID', `${name}: unexpected tensor "${n}" (not in the job's adapter layout)`);
  }
  const out = new Float32Array(layout.total);
  for (const e of layout.entries) {
    const t = header.entries.get(e.name);
    if (!t) throw fail('FEDLORA_ERR_UPDATE_INVALID', `${name}: missing tensor "${e.name}"`);
    if (t.shape.length !== e.shape.length || t.shape.some((d, i) => d !== e.shape[i])) {
      throw fail('FEDLORA_ERR_SHAPE', `${name}: tensor "${e.name}" has shape [${t.shape}], expected [${e.shape}]`);
    }
    if (t.dtype !== 'F32') throw fail('FEDLORA_ERR_UNSUPPORTED_DTYPE', `${name}: tensor "${e.name}" has dtype ${t.dtype}, expected F32`);
    const v = toFloat32(buf.subarray(t.offset, t.offset + t.length), 'F32');
    for (let i = 0; i < v.length; i++) {
      if (!Number.isFinite(v[i])) throw fail('FEDLORA_ERR_UPDATE_NONFINITE', `${name}: tensor "${e.name}" element ${i} is ${v[i]}`);
    }
    out.set(v, e.offset);
  }
  return out;
}

export function loadUpdateFile(file: string, layout: AdapterLayout): Float32Array {
  return validateUpdateBytes(readFileSync(file), layout, file);
}
