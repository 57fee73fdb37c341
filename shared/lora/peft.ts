// PEFT LoRA adapters on disk, exactly as PEFT's save_pretrained writes them (so vLLM, PEFT and
// transformers load ours, and we load theirs):
//   adapter_config.json        (json.dumps(indent=2, sort_keys=True) of LoraConfig)
//   adapter_model.safetensors  keys base_model.model.model.layers.{i}.{self_attn|mlp}.{t}.lora_{A|B}.weight
// PEFT strips the adapter name ("default") when saving; files saved from a raw state_dict may
// still carry ".default." — we accept both. F16/BF16 adapters are converted to F32 on read.

import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fail } from '../errors.ts';
import { decodeSafetensorsF32, writeSafetensors, type TensorToWrite } from '../safetensors.ts';
import type { AdapterWeights, LoraConfig, LoraTarget, ModelConfig } from './types.ts';
import { ALL_TARGETS, loraShapes, parentOf } from './keys.ts';

const ADAPTER_CONFIG = 'adapter_config.json';
const ADAPTER_WEIGHTS = 'adapter_model.safetensors';

export interface PeftSettings {
  r: number;
  alpha: number;
  targets: LoraTarget[];
  dropout: number;
  useRslora: boolean;
  baseModel: string;
}

export interface PeftAdapter {
  weights: AdapterWeights;
  config: PeftSettings;
  /** adapter_config.json as read. */
  rawConfig: Record<string, unknown>;
}

/** adapter_config.json content with every field PEFT 0.13 writes for a plain LoRA adapter. */
export function peftConfigJson(cfg: PeftSettings): Record<string, unknown> {
  const c: Record<string, unknown> = {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: cfg.baseModel,
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: null,
    loftq_config: {},
    lora_alpha: cfg.alpha,
    lora_dropout: cfg.dropout,
    megatron_config: null,
    megatron_core: 'megatron.core',
    modules_to_save: null,
    peft_type: 'LORA',
    r: cfg.r,
    rank_pattern: {},
    revision: null,
    target_modules: ALL_TARGETS.filter((t) => cfg.targets.includes(t)),
    task_type: 'CAUSAL_LM',
    use_dora: false,
    use_rslora: cfg.useRslora,
  };
  return Object.fromEntries(Object.entries(c).sort(([a], [b]) => (a < b ? -1 : 1)));
}

export function writePeftAdapter(dir: string, weights: AdapterWeights, cfg: PeftSettings): void {
  checkSettings(cfg, 'writePeftAdapter');
  checkKeysAndShapes(weights, cfg, `writePeftAdapter(${dir})`);
  mkdirSync(dir, { recursive: true });
  const tensors = new Map<string, TensorToWrite>();
  for (const [k, t] of weights) tensors.set(k, { dtype: 'F32', shape: t.shape, data: t.data });
  writeSafetensors(join(dir, ADAPTER_WEIGHTS), tensors, { format: 'pt' });
  const tmp = join(dir, `${ADAPTER_CONFIG}.tmp-${process.pid}`);
  writeFileSync(tmp, JSON.stringify(peftConfigJson(cfg), null, 2));
  renameSync(tmp, join(dir, ADAPTER_CONFIG));
}

function checkSettings(cfg: PeftSettings, where: string): void {
  if (!Number.isInteger(cfg.r) || cfg.r < 1) throw fail('FEDLORA_ERR_ADAPTER', `${where}: r must be a positive integer, got ${cfg.r}`);
  if (typeof cfg.alpha !== 'number' || !Number.isFinite(cfg.alpha)) throw fail('FEDLORA_ERR_ADAPTER', `${where}: lora_alpha must be a number, got ${cfg.alpha}`);
  if (!(cfg.dropout >= 0 && cfg.dropout < 1)) throw fail('FEDLORA_ERR_ADAPTER', `${where}: lora_dropout must be in [0, 1), got ${cfg.dropout}`);
  if (!cfg.targets.length) throw fail('FEDLORA_ERR_ADAPTER', `${where}: target_modules is empty`);
  for (const t of cfg.targets) if (!ALL_TARGETS.includes(t)) throw fail('FEDLORA_ERR_ADAPTER', `${where}: target module "${t}" is not one of ${ALL_TARGETS.join(', ')}`);
}

const KEY_RE = /^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.([a-z_]+)\.lora_([AB])(?:\.([A-Za-z0-9_-]+))?\.weight$/;

/** Parse a PEFT key (with or without an adapter name) into its parts, or explain why not. */
export function parsePeftKey(key: string): { layer: number; target: LoraTarget; which: 'A' | 'B'; canonical: string } {
  const m = KEY_RE.exec(key);
  if (!m) throw fail('FEDLORA_ERR_ADAPTER', `tensor "${key}" is not a LoRA weight of a decoder layer (expected base_model.model.model.layers.N.{self_attn|mlp}.<proj>.lora_{A|B}.weight)`);
  const target = m[3] as LoraTarget;
  if (!ALL_TARGETS.includes(target)) throw fail('FEDLORA_ERR_ADAPTER', `tensor "${key}": module "${m[3]}" is not a supported target (${ALL_TARGETS.join(', ')})`);
  if (parentOf(target) !== m[2]) throw fail('FEDLORA_ERR_ADAPTER', `tensor "${key}": ${target} belongs to ${parentOf(target)}, not ${m[2]}`);
  const layer = Number(m[1]);
  const which = m[4] as 'A' | 'B';
  return { layer, target, which, canonical: `base_model.model.model.layers.${layer}.${m[2]}.${target}.lora_${which}.weight` };
}

/** Names, pairing, rank and finiteness (no model needed). */
function checkKeysAndShapes(weights: AdapterWeights, cfg: Pick<PeftSettings, 'r' | 'targets'>, where: string): void {
  if (weights.size === 0) throw fail('FEDLORA_ERR_ADAPTER', `${where}: the adapter has no tensors`);
  const inOut = new Map<string, { A?: number[]; B?: number[] }>();
  for (const [k, t] of weights) {
    const p = parsePeftKey(k);
    if (p.canonical !== k) throw fail('FEDLORA_ERR_ADAPTER', `${where}: tensor "${k}" is not in canonical form ${p.canonical}`);
    if (!cfg.targets.includes(p.target)) throw fail('FEDLORA_ERR_ADAPTER', `${where}: tensor "${k}" targets ${p.target}, which is not in target_modules [${cfg.targets.join(', ')}]`);
    if (t.shape.length !== 2) throw fail('FEDLORA_ERR_SHAPE', `${where}: tensor "${k}" has shape [${t.shape}], expected 2 dimensions`);
    if (t.data.length !== t.shape[0] * t.shape[1]) throw fail('FEDLORA_ERR_SHAPE', `${where}: tensor "${k}" has ${t.data.length} values for shape [${t.shape}]`);
    const rDim = p.which === 'A' ? t.shape[0] : t.shape[1];
    if (rDim !== cfg.r) throw fail('FEDLORA_ERR_SHAPE', `${where}: tensor "${k}" has shape [${t.shape}]; its rank dimension is ${rDim}, but r = ${cfg.r}`);
    for (let i = 0; i < t.data.length; i++) {
      if (!Number.isFinite(t.data[i])) throw fail('FEDLORA_ERR_ADAPTER', `${where}: tensor "${k}" holds a non-finite value at index ${i}`);
    }
    const mod = k.slice(0, k.lastIndexOf('.lora_'));
    const e = inOut.get(mod) ?? {};
    e[p.which] = t.shape;
    inOut.set(mod, e);
  }
  for (const [mod, e] of inOut) {
    if (!e.A || !e.B) throw fail('FEDLORA_ERR_ADAPTER', `${where}: ${mod} has lora_${e.A ? 'A' : 'B'} but no lora_${e.A ? 'B' : 'A'}`);
  }
}

function unsupportedIfSet(raw: Record<string, unknown>, key: string, file: string, isDefault: (v: unknown) => boolean, why: string): void {
  if (key in raw && !isDefault(raw[key])) throw fail('FEDLORA_ERR_ADAPTER', `${file}: ${key} = ${JSON.stringify(raw[key])} is not supported (${why})`);
}

const emptyObj = (v: unknown) => v === null || v === undefined || (typeof v === 'object' && !Array.isArray(v) && Object.keys(v as object).length === 0);
const nullish = (v: unknown) => v === null || v === undefined;

/** Read adapter_config.json and adapter_model.safetensors as PEFT writes them. */
export function readPeftAdapter(dir: string): PeftAdapter {
  const cfgPath = join(dir, ADAPTER_CONFIG);
  const wPath = join(dir, ADAPTER_WEIGHTS);
  if (!existsSync(cfgPath)) throw fail('FEDLORA_ERR_ADAPTER', `${cfgPath}: missing`);
  if (!existsSync(wPath)) {
    const bin = existsSync(join(dir, 'adapter_model.bin'));
    throw fail('FEDLORA_ERR_ADAPTER', `${wPath}: missing${bin ? ' (found adapter_model.bin; save with safe_serialization=True)' : ''}`);
  }
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(readFileSync(cfgPath, 'utf8'));
  } catch (e) {
    throw fail('FEDLORA_ERR_ADAPTER', `${cfgPath}: not valid JSON (${(e as Error).message})`);
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw fail('FEDLORA_ERR_ADAPTER', `${cfgPath}: not a JSON object`);
  if (raw.peft_type !== 'LORA') throw fail('FEDLORA_ERR_ADAPTER', `${cfgPath}: peft_type ${JSON.stringify(raw.peft_type)} is not "LORA"`);
  if (raw.task_type !== undefined && raw.task_type !== null && raw.task_type !== 'CAUSAL_LM') {
    throw fail('FEDLORA_ERR_ADAPTER', `${cfgPath}: task_type ${JSON.stringify(raw.task_type)} is not "CAUSAL_LM"`);
  }
  unsupportedIfSet(raw, 'bias', cfgPath, (v) => v === 'none' || v === undefined, 'only bias = "none"');
  unsupportedIfSet(raw, 'use_dora', cfgPath, (v) => v === false || nullish(v), 'DoRA adapters are not supported');
  unsupportedIfSet(raw, 'fan_in_fan_out', cfgPath, (v) => v === false || nullish(v), 'only fan_in_fan_out = false (llama/qwen2 use nn.Linear)');
  unsupportedIfSet(raw, 'modules_to_save', cfgPath, (v) => nullish(v) || (Array.isArray(v) && v.length === 0), 'fully trained extra modules are not supported');
  unsupportedIfSet(raw, 'rank_pattern', cfgPath, emptyObj, 'per-module ranks are not supported');
  unsupportedIfSet(raw, 'alpha_pattern', cfgPath, emptyObj, 'per-module alphas are not supported');
  unsupportedIfSet(raw, 'layers_to_transform', cfgPath, nullish, 'adapters on a subset of layers are not supported');
  unsupportedIfSet(raw, 'layer_replication', cfgPath, nullish, 'layer replication is not supported');

  const r = raw.r;
  if (!Number.isInteger(r) || (r as number) < 1) throw fail('FEDLORA_ERR_ADAPTER', `${cfgPath}: r must be a positive integer, got ${JSON.stringify(r)}`);
  const alpha = raw.lora_alpha ?? 8; // PEFT's default lora_alpha
  if (typeof alpha !== 'number' || !Number.isFinite(alpha)) throw fail('FEDLORA_ERR_ADAPTER', `${cfgPath}: lora_alpha must be a number, got ${JSON.stringify(alpha)}`);
  const dropout = raw.lora_dropout ?? 0;
  if (typeof dropout !== 'number' || !(dropout >= 0 && dropout < 1)) throw fail('FEDLORA_ERR_ADAPTER', `${cfgPath}: lora_dropout must be in [0, 1), got ${JSON.stringify(dropout)}`);

  let buf: Buffer;
  try {
    buf = readFileSync(wPath);
  } catch (e) {
    throw fail('FEDLORA_ERR_ADAPTER', `${wPath}: cannot read (${(e as Error).message})`);
  }
  const { tensors } = decodeSafetensorsF32(buf, wPath);
  const weights: AdapterWeights = new Map();
  const seenTargets = new Set<LoraTarget>();
  for (const [k, t] of tensors) {
    let p;
    try {
      p = parsePeftKey(k);
    } catch (e) {
      throw fail('FEDLORA_ERR_ADAPTER', `${wPath}: ${(e as Error).message}`);
    }
    if (weights.has(p.canonical)) throw fail('FEDLORA_ERR_ADAPTER', `${wPath}: tensor "${k}" duplicates ${p.canonical}`);
    weights.set(p.canonical, { shape: t.shape, data: t.data });
    seenTargets.add(p.target);
  }

  let targets: LoraTarget[];
  const tm = raw.target_modules;
  if (Array.isArray(tm)) {
    for (const t of tm) {
      if (typeof t !== 'string' || !ALL_TARGETS.includes(t as LoraTarget)) {
        throw fail('FEDLORA_ERR_ADAPTER', `${cfgPath}: target_modules entry ${JSON.stringify(t)} is not one of ${ALL_TARGETS.join(', ')}`);
      }
    }
    targets = ALL_TARGETS.filter((t) => (tm as string[]).includes(t));
  } else if (typeof tm === 'string') {
    // PEFT allows a regex matched against full module names; the weights say which modules it hit.
    let re: RegExp;
    try {
      re = new RegExp(`^(?:${tm})$`);
    } catch {
      throw fail('FEDLORA_ERR_ADAPTER', `${cfgPath}: target_modules regex ${JSON.stringify(tm)} does not compile`);
    }
    targets = ALL_TARGETS.filter((t) => seenTargets.has(t));
    for (const k of weights.keys()) {
      const mod = k.slice('base_model.model.'.length, k.lastIndexOf('.lora_'));
      if (!re.test(mod)) throw fail('FEDLORA_ERR_ADAPTER', `${cfgPath}: module ${mod} has LoRA weights but does not match target_modules ${JSON.stringify(tm)}`);
    }
  } else {
    throw fail('FEDLORA_ERR_ADAPTER', `${cfgPath}: target_modules must be a list of module names, got ${JSON.stringify(tm)}`);
  }
  const config: PeftSettings = {
    r: r as number, alpha, targets, dropout, useRslora: raw.use_rslora === true,
    baseModel: typeof raw.base_model_name_or_path === 'string' ? raw.base_model_name_or_path : '',
  };
  checkKeysAndShapes(weights, config, wPath);
  return { weights, config, rawConfig: raw };
}

/** The adapter has exactly the tensors (names and shapes) a LoRA of `lora` on this model has.
 *  `where` names the adapter in errors (e.g. "initial adapter", a file path). */
export function validateAdapterAgainst(config: ModelConfig, weights: AdapterWeights, lora: Pick<LoraConfig, 'r' | 'targets'>, where?: string): void {
  const want = loraShapes(config, lora);
  const tensor = (k: string) => (where ? `${where}: tensor "${k}"` : `adapter tensor "${k}"`);
  for (const [k, t] of weights) {
    const shape = want.get(k);
    if (!shape) {
      let why = 'is not part of this model\'s LoRA';
      try {
        const p = parsePeftKey(k);
        if (p.layer >= config.numLayers) why = `refers to layer ${p.layer}, but the model has ${config.numLayers} layers`;
        else if (!lora.targets.includes(p.target)) why = `targets ${p.target}, which is not in [${lora.targets.join(', ')}]`;
      } catch (e) {
        why = (e as Error).message;
      }
      throw fail('FEDLORA_ERR_ADAPTER', `${tensor(k)} ${why}`);
    }
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]) || t.data.length !== shape[0] * shape[1]) {
      throw fail('FEDLORA_ERR_SHAPE', `${tensor(k)} has shape [${t.shape}], expected [${shape}] for this model (r = ${lora.r})`, { tensor: k, expected: shape, actual: t.shape });
    }
  }
  for (const k of want.keys()) if (!weights.has(k)) throw fail('FEDLORA_ERR_ADAPTER', `${tensor(k)} is missing (r = ${lora.r}, targets ${lora.targets.join(', ')})`);
}
