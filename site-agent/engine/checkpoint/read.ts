// Read a Hugging Face checkpoint folder without loading weights: config.json is normalised, the
// safetensors headers (single file or shards + index) give each tensor's file/offset/length, and
// every tensor the architecture needs is checked for presence, dtype and shape.

import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fail } from '../../../shared/errors.ts';
import { readSafetensorsHeader, type SafetensorsEntry } from '../../../shared/safetensors.ts';
import type { Checkpoint, TensorLocation, WeightDtype } from '../types.ts';
import { expectedTensors } from './expected-tensors.ts';
import { normalizeConfig } from '../../../shared/lora/model-config.ts';
import { buildManifest, buildManifestAsync, manifestDigest, manifestFileList, type ModelManifest } from './manifest.ts';

const INDEX = 'model.safetensors.index.json';
const SINGLE = 'model.safetensors';
const FLOAT_DTYPES = new Set(['F32', 'F16', 'BF16']);

function readJsonFile(path: string, what = 'JSON'): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw fail('FEDLORA_ERR_MODEL_FILES', `${path}: cannot read ${what} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw fail('FEDLORA_ERR_CONFIG', `${path}: not valid JSON (${(e as Error).message})`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw fail('FEDLORA_ERR_CONFIG', `${path}: expected a JSON object`);
  return v as Record<string, unknown>;
}

/** Weight files of a folder (relative names) and, for sharded checkpoints, the index's weight_map. */
export function listWeightFiles(dir: string): { files: string[]; weightMap: Map<string, string> | null } {
  const indexPath = join(dir, INDEX);
  if (existsSync(indexPath)) {
    const idx = readJsonFile(indexPath, 'the shard index');
    const wm = idx.weight_map;
    if (!wm || typeof wm !== 'object' || Array.isArray(wm)) throw fail('FEDLORA_ERR_MODEL_FILES', `${indexPath}: weight_map is missing or not an object`);
    const weightMap = new Map<string, string>();
    for (const [name, file] of Object.entries(wm as Record<string, unknown>)) {
      if (typeof file !== 'string' || file.includes('/') || file.includes('\\') || file.startsWith('.') || !file.endsWith('.safetensors')) {
        throw fail('FEDLORA_ERR_MODEL_FILES', `${indexPath}: weight_map["${name}"] = ${JSON.stringify(file)} is not a .safetensors file name in the folder`);
      }
      weightMap.set(name, file);
    }
    if (weightMap.size === 0) throw fail('FEDLORA_ERR_MODEL_FILES', `${indexPath}: weight_map is empty`);
    const files = [...new Set(weightMap.values())].sort();
    for (const f of files) if (!existsSync(join(dir, f))) throw fail('FEDLORA_ERR_MODEL_FILES', `${join(dir, f)}: shard named in ${INDEX} is missing`);
    return { files, weightMap };
  }
  if (existsSync(join(dir, SINGLE))) return { files: [SINGLE], weightMap: null };
  let present: string[] = [];
  try {
    present = readdirSync(dir);
  } catch (e) {
    throw fail('FEDLORA_ERR_MODEL_FILES', `${dir}: cannot list the model folder (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const bins = present.filter((f) => f.endsWith('.bin') || f.endsWith('.pt'));
  throw fail('FEDLORA_ERR_MODEL_FILES', `${dir}: no ${SINGLE} or ${INDEX}` + (bins.length ? ` (found PyTorch pickles ${bins.slice(0, 3).join(', ')}; convert them to safetensors)` : ''));
}

/** The manifest (and its sha256) of a model folder: config, tokenizer files, index and weights. */
export function computeModelManifest(dir: string): { manifest: ModelManifest; sha256: string; json: string } {
  const abs = resolve(dir);
  if (!existsSync(join(abs, 'config.json'))) throw fail('FEDLORA_ERR_MODEL_FILES', `${join(abs, 'config.json')}: missing`);
  const { files } = listWeightFiles(abs);
  const manifest = buildManifest(abs, manifestFileList(abs, files));
  const { json, sha256 } = manifestDigest(manifest);
  return { manifest, sha256, json };
}

/** computeModelManifest without blocking the event loop while hashing. */
export async function computeModelManifestAsync(dir: string): Promise<{ manifest: ModelManifest; sha256: string; json: string }> {
  const abs = resolve(dir);
  if (!existsSync(join(abs, 'config.json'))) throw fail('FEDLORA_ERR_MODEL_FILES', `${join(abs, 'config.json')}: missing`);
  const { files } = listWeightFiles(abs);
  const manifest = await buildManifestAsync(abs, manifestFileList(abs, files));
  const { json, sha256 } = manifestDigest(manifest);
  return { manifest, sha256, json };
}

export interface ReadCheckpointOptions {
  /** Skip hashing the files (manifestSha256 = ''); for quick inspection only. */
  skipManifest?: boolean;
}

export function readCheckpoint(dir: string, opts: ReadCheckpointOptions = {}): Checkpoint {
  const abs = resolve(dir);
  const configPath = join(abs, 'config.json');
  if (!existsSync(configPath)) throw fail('FEDLORA_ERR_MODEL_FILES', `${configPath}: missing (not a Hugging Face model folder?)`);
  const rawConfig = readJsonFile(configPath, 'config.json');
  const config = normalizeConfig(rawConfig, configPath);

  const { files, weightMap } = listWeightFiles(abs);
  const all = new Map<string, SafetensorsEntry & { file: string }>();
  for (const f of files) {
    const path = join(abs, f);
    const h = readSafetensorsHeader(path);
    for (const e of h.entries.values()) {
      const prev = all.get(e.name);
      if (prev) throw fail('FEDLORA_ERR_MODEL_FILES', `tensor "${e.name}" appears in both ${prev.file} and ${path}`);
      all.set(e.name, { ...e, file: path });
    }
  }
  if (weightMap) {
    for (const [name, f] of weightMap) {
      const got = all.get(name);
      if (!got) throw fail('FEDLORA_ERR_MODEL_FILES', `${join(abs, INDEX)}: weight_map lists "${name}" in ${f}, but no shard holds it`);
      if (got.file !== join(abs, f)) throw fail('FEDLORA_ERR_MODEL_FILES', `${join(abs, INDEX)}: weight_map puts "${name}" in ${f}, but it is in ${got.file}`);
    }
  }

  // Extra decoder layers mean config.json and the weights disagree (e.g. a truncated config).
  for (const name of all.keys()) {
    const m = /^model\.layers\.(\d+)\./.exec(name);
    if (m && Number(m[1]) >= config.numLayers) {
      throw fail('FEDLORA_ERR_MODEL_FILES', `${all.get(name)!.file}: tensor "${name}" belongs to layer ${m[1]}, but config.json num_hidden_layers = ${config.numLayers}`, { tensor: name });
    }
  }
  const tensors = new Map<string, TensorLocation>();
  const expected = expectedTensors(config);
  for (const [name, shape] of expected) {
    const e = all.get(name);
    if (!e) {
      throw fail('FEDLORA_ERR_MODEL_FILES', `${abs}: tensor "${name}" (shape [${shape}]) is missing from ${files.join(', ')}`, { tensor: name });
    }
    if (!FLOAT_DTYPES.has(e.dtype)) {
      throw fail('FEDLORA_ERR_UNSUPPORTED_DTYPE', `${e.file}: tensor "${name}" has dtype ${e.dtype}; supported: F32, F16, BF16`, { tensor: name });
    }
    if (e.shape.length !== shape.length || e.shape.some((d, i) => d !== shape[i])) {
      throw fail('FEDLORA_ERR_SHAPE', `${e.file}: tensor "${name}" has shape [${e.shape}], expected [${shape}] from config.json`, { tensor: name, expected: shape, actual: e.shape });
    }
    tensors.set(name, { name, dtype: e.dtype as WeightDtype, shape: e.shape, file: e.file, offset: e.offset, length: e.length });
  }
  // A tied model may still store lm_head.weight (some exporters do); expose it if well-formed.
  const lm = all.get('lm_head.weight');
  if (config.tieWordEmbeddings && lm && FLOAT_DTYPES.has(lm.dtype) && lm.shape.join() === `${config.vocabSize},${config.hiddenSize}`) {
    tensors.set(lm.name, { name: lm.name, dtype: lm.dtype as WeightDtype, shape: lm.shape, file: lm.file, offset: lm.offset, length: lm.length });
  }

  const manifestSha256 = opts.skipManifest ? '' : manifestDigest(buildManifest(abs, manifestFileList(abs, files))).sha256;
  return { dir: abs, config, rawConfig, tensors, manifestSha256 };
}
