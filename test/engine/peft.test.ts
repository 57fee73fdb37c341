import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync, readFileSync, writeFileSync, existsSync, mkdirSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writePeftAdapter, readPeftAdapter, validateAdapterAgainst, parsePeftKey, type PeftSettings } from '../../shared/lora/peft.ts';
import { encodeSafetensors } from '../../shared/safetensors.ts';
import { normalizeConfig } from '../../shared/lora/model-config.ts';
import { loraShapes, loraScaling } from '../../shared/lora/keys.ts';
import type { AdapterWeights, ModelConfig } from '../../shared/lora/types.ts';
import { FedloraError } from '../../shared/errors.ts';
import { PYTHON, requireTool, TORCH } from '../runner/reference-tools.ts';
import { runProcess } from '../runner/run-process.ts';

const SCRIPT = join(import.meta.dirname, 'peft_crosscheck.py');

// layers 2, hidden 32, 4 heads / 2 kv heads (kv out 16), intermediate 48
const CFG: ModelConfig = normalizeConfig({
  architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 32, num_attention_heads: 4, num_key_value_heads: 2,
  intermediate_size: 48, num_hidden_layers: 2, vocab_size: 300,
});

let root: string;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'fedlora-peft-'));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

function randomAdapter(cfg: ModelConfig, settings: Pick<PeftSettings, 'r' | 'targets'>, seed: number): AdapterWeights {
  let s = seed;
  const rnd = () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32 - 0.5);
  const w: AdapterWeights = new Map();
  for (const [k, shape] of loraShapes(cfg, settings)) w.set(k, { shape, data: Float32Array.from({ length: shape[0] * shape[1] }, rnd) });
  return w;
}
const SETTINGS: PeftSettings = { r: 4, alpha: 8, targets: ['q_proj', 'v_proj', 'down_proj'], dropout: 0.05, useRslora: false, baseModel: 'deepseek-ai/DeepSeek-R1-Distill-Llama-8B' };

function err(fn: () => unknown): FedloraError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(FedloraError);
    return e as FedloraError;
  }
  throw new Error('expected a FedloraError');
}

describe('PEFT adapters', () => {
  it('round-trips weights and settings; writes the fields PEFT writes', () => {
    const dir = join(root, 'rt');
    const w = randomAdapter(CFG, SETTINGS, 1);
    writePeftAdapter(dir, w, SETTINGS);
    const back = readPeftAdapter(dir);
    expect(back.config).toEqual(SETTINGS);
    expect([...back.weights.keys()].sort()).toEqual([...w.keys()].sort());
    for (const [k, t] of w) {
      expect(back.weights.get(k)!.shape).toEqual(t.shape);
      expect(back.weights.get(k)!.data).toEqual(t.data);
    }
    const raw = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
    expect(raw).toMatchObject({ peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 4, lora_alpha: 8, lora_dropout: 0.05, bias: 'none', use_rslora: false,
      fan_in_fan_out: false, init_lora_weights: true, modules_to_save: null, inference_mode: true, base_model_name_or_path: SETTINGS.baseModel,
      target_modules: ['q_proj', 'v_proj', 'down_proj'] });
    expect(Object.keys(raw)).toEqual([...Object.keys(raw)].sort());
    validateAdapterAgainst(CFG, back.weights, back.config);
  });

  it('accepts what PEFT may write: ".default." adapter names, F16/BF16 tensors, regex target_modules', () => {
    const dir = join(root, 'variants');
    writePeftAdapter(dir, randomAdapter(CFG, SETTINGS, 2), SETTINGS);
    const w = randomAdapter(CFG, SETTINGS, 3);
    const tensors: Record<string, any> = {};
    for (const [k, t] of w) tensors[k.replace('.weight', '.default.weight')] = { dtype: 'BF16', shape: t.shape, data: t.data };
    writeFileSync(join(dir, 'adapter_model.safetensors'), encodeSafetensors(tensors, { format: 'pt' }));
    const back = readPeftAdapter(dir);
    for (const [k, t] of w) {
      const got = back.weights.get(k)!.data;
      for (let i = 0; i < t.data.length; i++) expect(Math.abs(got[i] - t.data[i])).toBeLessThanOrEqual(Math.abs(t.data[i]) / 128);
    }
    const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
    cfg.target_modules = '.*\\.(q_proj|v_proj|down_proj)';
    writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify(cfg));
    expect(readPeftAdapter(dir).config.targets).toEqual(['q_proj', 'v_proj', 'down_proj']);
    cfg.target_modules = '.*\\.q_proj';
    writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify(cfg));
    expect(err(() => readPeftAdapter(dir)).message).toMatch(/does not match target_modules/);
    expect(parsePeftKey('base_model.model.model.layers.3.mlp.up_proj.lora_B.weight')).toMatchObject({ layer: 3, target: 'up_proj', which: 'B' });
  });

  it('accepts the shorter adapter_config.json of older PEFT versions (defaults for absent fields)', () => {
    const dir = join(root, 'old');
    const w = randomAdapter(CFG, SETTINGS, 7);
    writePeftAdapter(dir, w, SETTINGS);
    writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({
      base_model_name_or_path: 'm', bias: 'none', enable_lora: null, fan_in_fan_out: false, inference_mode: true, lora_alpha: 16,
      lora_dropout: 0.1, merge_weights: false, modules_to_save: null, peft_type: 'LORA', r: 4, target_modules: ['q_proj', 'v_proj', 'down_proj'], task_type: 'CAUSAL_LM',
    }));
    const a = readPeftAdapter(dir);
    expect(a.config).toEqual({ r: 4, alpha: 16, targets: ['q_proj', 'v_proj', 'down_proj'], dropout: 0.1, useRslora: false, baseModel: 'm' });
    expect(a.weights.size).toBe(w.size);
  });

  it('rejects bad names, shapes, unknown targets and unsupported options with clear errors', () => {
    const base = join(root, 'bad-base');
    writePeftAdapter(base, randomAdapter(CFG, SETTINGS, 4), SETTINGS);
    const variant = (name: string, editCfg: (c: any) => void, editT?: (t: Record<string, any>) => void): string => {
      const d = join(root, name);
      cpSync(base, d, { recursive: true });
      const c = JSON.parse(readFileSync(join(d, 'adapter_config.json'), 'utf8'));
      editCfg(c);
      writeFileSync(join(d, 'adapter_config.json'), JSON.stringify(c));
      if (editT) {
        const t: Record<string, any> = {};
        for (const [k, v] of randomAdapter(CFG, SETTINGS, 4)) t[k] = { dtype: 'F32', shape: v.shape, data: v.data };
        editT(t);
        writeFileSync(join(d, 'adapter_model.safetensors'), encodeSafetensors(t));
      }
      return d;
    };
    const q0A = 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight';
    expect(err(() => readPeftAdapter(variant('t1', (c) => (c.target_modules = ['q_proj', 'embed_tokens'])))).message).toMatch(/target_modules entry "embed_tokens"/);
    expect(err(() => readPeftAdapter(variant('t2', (c) => (c.peft_type = 'IA3')))).message).toMatch(/peft_type "IA3" is not "LORA"/);
    expect(err(() => readPeftAdapter(variant('t3', (c) => (c.use_dora = true)))).message).toMatch(/use_dora = true is not supported/);
    expect(err(() => readPeftAdapter(variant('t4', (c) => (c.rank_pattern = { q_proj: 8 })))).message).toMatch(/rank_pattern/);
    expect(err(() => readPeftAdapter(variant('t5', (c) => (c.r = 8)))).message).toMatch(/rank dimension is 4, but r = 8/);
    expect(err(() => readPeftAdapter(variant('t6', () => {}, (t) => { t['base_model.model.lm_head.lora_A.weight'] = { dtype: 'F32', shape: [4, 32], data: new Float32Array(128) }; }))).message).toMatch(/lm_head.lora_A.weight" is not a LoRA weight of a decoder layer/);
    expect(err(() => readPeftAdapter(variant('t7', () => {}, (t) => { delete t['base_model.model.model.layers.1.mlp.down_proj.lora_B.weight']; }))).message).toMatch(/down_proj has lora_A but no lora_B/);
    expect(err(() => readPeftAdapter(variant('t8', () => {}, (t) => { t[q0A] = { dtype: 'F32', shape: [4, 32], data: new Float32Array(128).fill(NaN) }; }))).message).toMatch(/non-finite value/);
    expect(err(() => readPeftAdapter(variant('t9', () => {}, (t) => { t['base_model.model.model.layers.0.mlp.q_proj.lora_A.weight'] = t[q0A]; }))).message).toMatch(/q_proj belongs to self_attn, not mlp/);
    expect(err(() => readPeftAdapter(join(root, 'none'))).message).toMatch(/adapter_config.json: missing/);
    // against a model: wrong in_features, too many layers, missing tensors
    const w = randomAdapter(CFG, SETTINGS, 5);
    const other = normalizeConfig({ model_type: 'llama', hidden_size: 64, num_attention_heads: 4, intermediate_size: 48, num_hidden_layers: 2, vocab_size: 300 });
    const e = err(() => validateAdapterAgainst(other, w, SETTINGS));
    expect(e.code).toBe('FEDLORA_ERR_SHAPE');
    expect(e.message).toContain('has shape [4,32], expected [4,64]');
    const one = normalizeConfig({ model_type: 'llama', hidden_size: 32, num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 48, num_hidden_layers: 1, vocab_size: 300 });
    expect(err(() => validateAdapterAgainst(one, w, SETTINGS)).message).toMatch(/refers to layer 1, but the model has 1 layers/);
    w.delete(q0A);
    expect(err(() => validateAdapterAgainst(CFG, w, SETTINGS)).message).toContain(`"${q0A}" is missing`);
  });
});

describe('PEFT files cross-checked with torch', () => {
  for (const [dtype, name] of [['BF16', 'default'], ['F32', '-'], ['F16', '-']] as const) {
    it(`a PEFT-style ${dtype} adapter written by python loads (adapter name ${name})`, async () => {
      await requireTool(TORCH);
      const dir = join(root, `py-${dtype}`);
      mkdirSync(dir, { recursive: true });
      const r = await runProcess(PYTHON, [SCRIPT, 'write', dir, '2', '32', '16', '48', '4', dtype, name]);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      const expected: Record<string, number[]> = JSON.parse(r.stdout);
      const a = readPeftAdapter(dir);
      expect(a.config).toEqual({ r: 4, alpha: 32, targets: ['q_proj', 'v_proj', 'down_proj'], dropout: 0.05, useRslora: false, baseModel: 'deepseek-ai/DeepSeek-R1-Distill-Llama-8B' });
      validateAdapterAgainst(CFG, a.weights, a.config);
      expect(a.weights.size).toBe(Object.keys(expected).length);
      for (const [k, v] of Object.entries(expected)) expect([...a.weights.get(k)!.data]).toEqual(v.map(Math.fround));
    });
  }

  it('ours parses in python as PEFT expects, and B@A*scaling agrees', async () => {
    await requireTool(TORCH);
    const dir = join(root, 'ours-for-py');
    const settings = { ...SETTINGS, useRslora: true, alpha: 16 };
    const w = randomAdapter(CFG, settings, 6);
    writePeftAdapter(dir, w, settings);
    const r = await runProcess(PYTHON, [SCRIPT, 'check', dir, '2', '32', '16', '48']);
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.errors).toEqual([]);
    const s = loraScaling(settings);
    expect(out.scaling).toBeCloseTo(s, 12);
    const A = w.get(`${out.module}.lora_A.weight`)!, B = w.get(`${out.module}.lora_B.weight`)!;
    const [o, rr] = B.shape, inF = A.shape[1];
    for (let i = 0; i < o; i++) for (let j = 0; j < inF; j++) {
      let acc = 0;
      for (let k = 0; k < rr; k++) acc += B.data[i * rr + k] * A.data[k * inF + j];
      expect(Math.abs(out.delta[i * inF + j] - acc * s)).toBeLessThan(1e-5);
    }
  });
});
