import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeTinyModel, readCheckpoint } from '../../site-agent/engine/checkpoint/index.ts';
import { mergeAdapter } from '../../site-agent/engine/merge.ts';
import { writePeftAdapter, type PeftSettings } from '../../shared/lora/peft.ts';
import { readTensorBytes, toFloat32 } from '../../shared/safetensors.ts';
import { loraShapes } from '../../shared/lora/keys.ts';
import type { AdapterWeights, ModelConfig } from '../../shared/lora/types.ts';
import type { TensorLocation, WeightDtype } from '../../site-agent/engine/types.ts';

let root: string;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'fedlora-merge-'));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

function adapterFor(cfg: ModelConfig, s: PeftSettings, seed: number): AdapterWeights {
  let x = seed;
  const rnd = () => ((x = (x * 1664525 + 1013904223) >>> 0) / 2 ** 32 - 0.5) * 0.2;
  const w: AdapterWeights = new Map();
  for (const [k, shape] of loraShapes(cfg, s)) w.set(k, { shape, data: Float32Array.from({ length: shape[0] * shape[1] }, rnd) });
  return w;
}
const values = (t: TensorLocation) => toFloat32(readTensorBytes(t, t.file), t.dtype);

/** Independent reference: W + s * (B @ A) in float64, element by element. */
function reference(W: Float32Array, A: Float32Array, B: Float32Array, out: number, inF: number, r: number, s: number): Float64Array {
  const res = new Float64Array(out * inF);
  for (let i = 0; i < out; i++) for (let j = 0; j < inF; j++) {
    let acc = 0;
    for (let k = 0; k < r; k++) acc += B[i * r + k] * A[k * inF + j];
    res[i * inF + j] = W[i * inF + j] + s * acc;
  }
  return res;
}

function ulp(x: number, dtype: WeightDtype): number {
  if (dtype === 'F32') return Math.max(Math.abs(x) * 2 ** -23, 2 ** -126);
  const mant = dtype === 'BF16' ? 7 : 10;
  const e = Math.floor(Math.log2(Math.max(Math.abs(x), dtype === 'BF16' ? 2 ** -126 : 2 ** -14)));
  return 2 ** (e - mant);
}

describe('mergeAdapter', () => {
  for (const [dtype, sharded, arch] of [['F32', false, 'llama'], ['BF16', true, 'qwen2'], ['F16', false, 'llama']] as const) {
    it(`${arch} ${dtype}${sharded ? ' sharded' : ''}: W' = W + s·B·A on targeted projections, all else byte-identical`, () => {
      const base = join(root, `base-${dtype}`);
      const ad = join(root, `ad-${dtype}`);
      const out = join(root, `merged-${dtype}`);
      writeTinyModel({ arch, out: base, seed: 11, layers: 2, hidden: 32, heads: 4, kvHeads: 2, intermediate: 48, dtype, sharded, biasStd: 0.02 });
      const ck = readCheckpoint(base);
      const s: PeftSettings = { r: 4, alpha: 16, targets: ['q_proj', 'v_proj', 'o_proj', 'down_proj'], dropout: 0, useRslora: dtype === 'F16', baseModel: base };
      const w = adapterFor(ck.config, s, 3);
      writePeftAdapter(ad, w, s);
      const res = mergeAdapter(base, ad, out);
      const scaling = s.useRslora ? s.alpha / Math.sqrt(s.r) : s.alpha / s.r;
      expect(res.scaling).toBeCloseTo(scaling, 12);
      expect(res.mergedTensors).toHaveLength(8);

      const merged = readCheckpoint(out);
      expect(merged.config).toEqual(ck.config);
      expect(readdirSync(out).sort()).toEqual(readdirSync(base).sort());
      for (const f of ['tokenizer.json', 'tokenizer_config.json', 'config.json', 'generation_config.json']) {
        expect(readFileSync(join(out, f)).equals(readFileSync(join(base, f)))).toBe(true);
      }
      let changed = 0;
      for (const [name, loc] of ck.tensors) {
        const m = merged.tensors.get(name)!;
        expect(m.dtype).toBe(loc.dtype);
        expect(m.offset).toBe(loc.offset);
        const hit = /^model\.layers\.(\d+)\.(self_attn|mlp)\.(q_proj|v_proj|o_proj|down_proj)\.weight$/.exec(name);
        if (!hit) {
          expect(readTensorBytes(m, m.file).equals(readTensorBytes(loc, loc.file))).toBe(true);
          continue;
        }
        const key = `base_model.model.model.layers.${hit[1]}.${hit[2]}.${hit[3]}`;
        const A = w.get(`${key}.lora_A.weight`)!, B = w.get(`${key}.lora_B.weight`)!;
        const [o, i] = loc.shape;
        const before = values(loc);
        const want = reference(before, A.data, B.data, o, i, s.r, scaling);
        const got = values(m);
        let moved = 0;
        for (let j = 0; j < want.length; j++) {
          // one rounding of the exact sum: within half an ulp (+ float32 noise)
          expect(Math.abs(got[j] - want[j])).toBeLessThanOrEqual(ulp(want[j], dtype) * 0.5 + 1e-7);
          if (got[j] !== before[j]) moved++;
        }
        expect(moved).toBeGreaterThan(want.length / 2);
        changed++;
      }
      expect(changed).toBe(8);
      expect(merged.manifestSha256).not.toBe(ck.manifestSha256);
    });
  }

  it('refuses an adapter that does not fit the model, and merging in place', () => {
    const base = join(root, 'base-F32');
    const ck = readCheckpoint(base, { skipManifest: true });
    const s: PeftSettings = { r: 2, alpha: 4, targets: ['k_proj'], dropout: 0, useRslora: false, baseModel: 'x' };
    const cfgBig = { ...ck.config, hiddenSize: 64, headDim: 16 };
    writePeftAdapter(join(root, 'ad-big'), adapterFor(cfgBig, s, 1), s);
    expect(() => mergeAdapter(base, join(root, 'ad-big'), join(root, 'm-big'))).toThrow(/expected \[2,32\]/);
    expect(() => mergeAdapter(base, join(root, 'ad-F32'), base)).toThrow(/must differ from the model folder/);
  });
});
