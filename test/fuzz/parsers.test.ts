// Property-based fuzzing of the parsers that take bytes/text from outside the process: uploaded
// updates (safetensors → validateUpdateBytes), adapter tensors (decodeSafetensorsF32), job specs
// (parseJobSpecText) and site configs (parseSiteConfig). Each must either accept the input or
// throw a FedloraError with a catalogue code — never a TypeError/RangeError, never a hang.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import YAML from 'yaml';
import { ERRORS, isFedloraError } from '../../shared/errors.ts';
import { decodeSafetensorsF32, encodeSafetensors, parseSafetensorsHeader } from '../../shared/safetensors.ts';
import { layoutOf } from '../../shared/tensors.ts';
import { validateUpdateBytes } from '../../coordinator/rounds/validate-update.ts';
import { parseJobSpecText } from '../../coordinator/jobs/spec.ts';
import { parseSiteConfig } from '../../site-agent/config.ts';

const RUNS = Number(process.env.FEDLORA_FUZZ_RUNS ?? 2000);

/** Run `fn`; a non-Fedlora throw fails the property with the input that caused it. */
function clearOrOk(fn: () => unknown, allowed?: string[]): void {
  try {
    fn();
  } catch (e) {
    if (!isFedloraError(e)) throw new Error(`non-FedloraError thrown: ${(e as Error)?.stack ?? String(e)}`);
    expect(e.code in ERRORS).toBe(true);
    expect(e.message.length).toBeGreaterThan(0);
    if (allowed) expect(allowed).toContain(e.code);
  }
}

// The job's adapter layout: two tiny LoRA tensors.
const LAYOUT = layoutOf(
  new Map([
    ['base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight', { shape: [2, 4] }],
    ['base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight', { shape: [4, 2] }],
  ]),
);
const UPDATE_CODES = ['FEDLORA_ERR_UPDATE_INVALID', 'FEDLORA_ERR_SHAPE', 'FEDLORA_ERR_UNSUPPORTED_DTYPE', 'FEDLORA_ERR_UPDATE_NONFINITE'];

const anyFloat = fc.oneof(fc.float({ noDefaultInfinity: false, noNaN: false }), fc.constantFrom(NaN, Infinity, -Infinity, 0, -0));

/** A syntactically valid safetensors file whose content may be wrong for the layout. */
const mutatedUpdate = fc.record({
  names: fc.subarray(LAYOUT.entries.map((e) => e.name)).chain((ns) => fc.tuple(fc.constant(ns), fc.array(fc.string({ maxLength: 30 }), { maxLength: 2 }))),
  dtype: fc.constantFrom('F32', 'F32', 'F32', 'F16', 'BF16') as fc.Arbitrary<'F32' | 'F16' | 'BF16'>,
  shapeTweak: fc.constantFrom('same', 'same', 'transpose', 'grow', 'rank'),
  values: fc.array(anyFloat, { minLength: 1, maxLength: 8 }),
});

function buildUpdate(u: { names: [string[], string[]]; dtype: 'F32' | 'F16' | 'BF16'; shapeTweak: string; values: number[] }): Buffer {
  const m = new Map<string, { dtype: 'F32' | 'F16' | 'BF16'; shape: number[]; data: Float32Array }>();
  const all = [...u.names[0], ...u.names[1].filter((n) => n.length > 0 && n !== '__metadata__')];
  for (const name of all) {
    const e = LAYOUT.entries.find((x) => x.name === name);
    let shape = e ? [...e.shape] : [3];
    if (u.shapeTweak === 'transpose') shape = [...shape].reverse();
    if (u.shapeTweak === 'grow') shape = [shape[0] + 1, ...shape.slice(1)];
    if (u.shapeTweak === 'rank') shape = [shape.reduce((a, b) => a * b, 1)];
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = u.values[i % u.values.length];
    m.set(name, { dtype: u.dtype, shape, data });
  }
  return encodeSafetensors(m);
}

describe('fuzz: uploaded update bytes', () => {
  it('well-formed safetensors with wrong names/shapes/dtypes/NaN/Inf: accepted only when exactly right, else a clear update error', () => {
    fc.assert(
      fc.property(mutatedUpdate, (u) => {
        const buf = buildUpdate(u);
        let flat: Float32Array | null = null;
        clearOrOk(() => (flat = validateUpdateBytes(buf, LAYOUT, 'update.safetensors')), UPDATE_CODES);
        const exact = u.names[0].length === LAYOUT.entries.length && u.names[1].every((n) => n.length === 0 || n === '__metadata__' || LAYOUT.entries.some((e) => e.name === n));
        const finite = u.values.every((v) => Number.isFinite(v));
        const mustAccept = exact && u.dtype === 'F32' && u.shapeTweak === 'same' && finite;
        if (mustAccept) expect(flat).not.toBeNull();
        if (flat) {
          // Only ever accepted when every tensor is right and every value finite.
          expect(u.dtype).toBe('F32');
          expect((flat as Float32Array).length).toBe(LAYOUT.total);
          expect((flat as Float32Array).every((v) => Number.isFinite(v))).toBe(true);
        }
      }),
      { numRuns: RUNS },
    );
  });

  it('random bytes and corrupted headers never crash the header parser or the validator', () => {
    const good = buildUpdate({ names: [LAYOUT.entries.map((e) => e.name), []], dtype: 'F32', shapeTweak: 'same', values: [0.5] });
    const corrupt = fc.oneof(
      fc.uint8Array({ maxLength: 256 }),
      // flip/overwrite bytes of a valid file (header length, JSON, data)
      fc.array(fc.tuple(fc.nat(good.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }).map((edits) => {
        const b = Buffer.from(good);
        for (const [i, v] of edits) b[i] = v;
        return b;
      }),
      // truncation
      fc.nat(good.length).map((n) => good.subarray(0, n)),
      // hand-written headers with hostile fields
      fc.record({
        dtype: fc.oneof(fc.constantFrom('F32', 'F16', 'BF16', 'I64', 'U8', 'Q4', ''), fc.anything()),
        shape: fc.oneof(fc.array(fc.oneof(fc.integer({ min: -3, max: 2 ** 40 }), fc.double()), { maxLength: 4 }), fc.anything()),
        offs: fc.oneof(fc.array(fc.oneof(fc.integer({ min: -5, max: 2 ** 53 }), fc.double()), { maxLength: 3 }), fc.anything()),
        meta: fc.anything(),
        tail: fc.nat(64),
      }).map((h) => {
        const json = Buffer.from(JSON.stringify({ __metadata__: h.meta, [LAYOUT.entries[0].name]: { dtype: h.dtype, shape: h.shape, data_offsets: h.offs } }) ?? '{}');
        const len = Buffer.alloc(8);
        len.writeBigUInt64LE(BigInt(json.length));
        return Buffer.concat([len, json, Buffer.alloc(h.tail)]);
      }),
    );
    fc.assert(
      fc.property(corrupt, (buf) => {
        clearOrOk(() => parseSafetensorsHeader(buf, buf.byteLength, 'fuzz.safetensors'));
        clearOrOk(() => decodeSafetensorsF32(buf, 'fuzz.safetensors'));
        clearOrOk(() => validateUpdateBytes(buf, LAYOUT, 'fuzz.safetensors'), UPDATE_CODES);
      }),
      { numRuns: RUNS },
    );
  });
});

const SHA = 'a'.repeat(64);
const VALID_JOB = {
  name: 'fuzz',
  base_model: { id: 'tiny', manifest_sha256: SHA, config: { hidden_size: 8 } },
  lora: { r: 4, alpha: 8, target_modules: ['q_proj'] },
  rounds: 2,
  train: { local_steps: 1, learning_rate: 0.01 },
};

/** Replace the value at a random path of a JSON object with an arbitrary value. */
function mutateAt(obj: unknown, path: number[], value: unknown): unknown {
  if (path.length === 0 || obj === null || typeof obj !== 'object') return value;
  const keys = Object.keys(obj as object);
  if (keys.length === 0) return value;
  const k = keys[path[0] % keys.length];
  const copy: Record<string, unknown> = Array.isArray(obj) ? ([...obj] as unknown as Record<string, unknown>) : { ...(obj as Record<string, unknown>) };
  copy[k] = mutateAt(copy[k], path.slice(1), value);
  return copy;
}

const hostile = fc.oneof(
  fc.anything(),
  fc.constantFrom(NaN, Infinity, -1, 0, 1e308, '', 'x'.repeat(10_000), null, [], {}, '__proto__', { __proto__: { polluted: true } }),
  fc.array(fc.integer(), { maxLength: 2000 }),
);

describe('fuzz: job specs', () => {
  it('the valid base spec parses (control)', () => {
    expect(parseJobSpecText(JSON.stringify(VALID_JOB)).rounds).toBe(2);
  });

  it('a mutated field anywhere gives FEDLORA_ERR_JOB_INVALID or a valid spec', () => {
    fc.assert(
      fc.property(fc.array(fc.nat(20), { minLength: 1, maxLength: 4 }), hostile, fc.boolean(), (path, value, asYaml) => {
        const mutated = mutateAt(VALID_JOB, path, value);
        let text: string;
        try {
          text = asYaml ? YAML.stringify(mutated) : JSON.stringify(mutated) ?? 'null';
        } catch {
          return; // not serialisable (e.g. BigInt): nothing a researcher could submit
        }
        clearOrOk(() => parseJobSpecText(text, 'fuzz.yaml'), ['FEDLORA_ERR_JOB_INVALID']);
        expect(({} as Record<string, unknown>).polluted).toBeUndefined();
      }),
      { numRuns: RUNS },
    );
  });

  it('arbitrary text gives FEDLORA_ERR_JOB_INVALID', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 300 }), fc.string({ unit: 'binary', maxLength: 300 }), fc.json()), (text) => {
        clearOrOk(() => parseJobSpecText(text, 'fuzz.yaml'), ['FEDLORA_ERR_JOB_INVALID']);
      }),
      { numRuns: RUNS },
    );
  });
});

describe('fuzz: site configs', () => {
  it('arbitrary objects and mutated fields give FEDLORA_ERR_CONFIG or a config', () => {
    const base = {
      site_id: 'hospital-1',
      coordinator: { endpoint: '127.0.0.1:50051' },
      model: { path: '/tmp/model' },
    };
    fc.assert(
      fc.property(fc.oneof(hostile, fc.tuple(fc.array(fc.nat(20), { minLength: 1, maxLength: 3 }), hostile).map(([p, v]) => mutateAt(base, p, v))), (raw) => {
        clearOrOk(() => parseSiteConfig(raw, 'fuzz-site.yaml'), ['FEDLORA_ERR_CONFIG']);
      }),
      { numRuns: RUNS },
    );
  });
});
