// The base weights a graph reads, prepared once per (checkpoint, mode) and cached on disk, keyed by
// the checkpoint's manifest sha256 (any changed byte of config or weights gives a new key):
//  - 'none' with an F16/BF16 checkpoint: every tensor converted to float32 in one safetensors file.
//    The graph reads it as external data (memory-mapped by ONNX Runtime), so the model's float32
//    weights exist once, as clean file pages, never beside the bf16 pages and a folded Cast's copy.
//    A float32 checkpoint is read as it is.
//  - 'int8' / 'int4': every Linear weight (and the embedding and lm_head) blockwise quantized
//    (blockwise.ts), plus W^T quantized for the backward pass; norms and biases stay in the
//    checkpoint (tiny, cast in the graph).
// Entries are written to a temporary folder and renamed into place, so a crash never leaves a
// half-written cache; a new entry for the same checkpoint folder and mode replaces older ones.

import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { fail } from '../../../shared/errors.ts';
import { readSafetensorsHeader, toFloat32, type SafetensorsEntry } from '../../../shared/safetensors.ts';
import { writeSafetensorsStream, type TensorSpec } from '../../../shared/safetensors-writer.ts';
import type { Checkpoint, QuantMode, TensorLocation } from '../types.ts';
import { blocksPerRow, quantizeMatrix, rowBytes, type QuantBits, type QuantizedMatrix } from './blockwise.ts';

/** Bump when the cache's content for the same inputs changes (quantizer, layout). */
export const WEIGHT_CACHE_VERSION = 'w1';

/** How each mode quantizes: bits; the forward copy's block size and MatMulNBits accuracy level; the
 *  same for W^T, the input gradient's weight. Measured in ONNX Runtime 1.30 on this project's
 *  machine (2 cores, AVX-512 VNNI), packed bytes per parameter in memory:
 *   - accuracy level 4 (activations quantized to int8 per block inside the kernel) is the fast path,
 *     but costs ~10 bytes per block (int4: 0.85 B/param at block 32, 0.58 at 128; int8: 1.31, 1.04);
 *     level 0 computes in float32 from the dequantized weight (int4: 0.61 at 32, 0.52 at 128, and
 *     still faster than float32 Gemm), but 8 bits at level 0 is ORT's slow unpacked path.
 *   - the forward block sets the weight error (int4 LoRA-gradient cosine to float32 on a tiny
 *     trained-like model: 0.94 at 32, 0.91 at 64, 0.85 at 128);
 *   - the backward at level 4 quantizes the gradient per block, and gradients have outlier
 *     channels: int8's cosine is 0.990 with W^T in blocks of 128, 0.998 in blocks of 32.
 *   - a quantized W^T at level 4 still cost int8 a LoRA-B gradient cosine of 0.96 against float32
 *     on R1-Distill-Qwen-1.5B shapes with trained-like scales; dequantizing W's own int8 blocks
 *     for the input gradient (a float32 MatMul, one weight at a time) leaves only W's rounding
 *     error in the gradient, needs no second copy, and costs float32 speed in that product.
 *  So int8 runs level 4 with W in blocks of 128 and its decoder layers' input gradients through the
 *  dequantized W (lm_head's through W^T in blocks of 32: a vocabulary-sized float32 copy per
 *  loss chunk would cost more than the copy), and int4 runs level 0 (exact arithmetic, least
 *  memory) with W in blocks of 32 and W^T in blocks of 128. */
export interface QuantScheme {
  bits: QuantBits;
  block: number;
  accuracy: 0 | 4;
  /** How a decoder layer's weight passes the input gradient: its own blocks dequantized, or a
   *  quantized transposed copy (lm_head and a tied embedding always use the copy). */
  layerBackward: 'dequantize' | 'transposed';
  backwardBlock: number;
  backwardAccuracy: 0 | 4;
}

export const QUANT_SCHEMES: Record<Exclude<QuantMode, 'none'>, QuantScheme> = {
  int8: { bits: 8, block: 128, accuracy: 4, layerBackward: 'dequantize', backwardBlock: 32, backwardAccuracy: 4 },
  int4: { bits: 4, block: 32, accuracy: 0, layerBackward: 'transposed', backwardBlock: 128, backwardAccuracy: 0 },
};

/** Where a tensor's bytes are. */
export interface RawLocation {
  file: string;
  offset: number;
  length: number;
}

export interface QuantizedWeight {
  rows: number;
  cols: number;
  data: RawLocation; // uint8 [rows, blocks*block*bits/8]
  scales: RawLocation; // float32 [rows, blocks]
  /** W^T [cols, rows] for the backward pass, blocks of `backwardBlock` (absent for the embedding of an untied model). */
  t: { data: RawLocation; scales: RawLocation } | null;
}

export interface BaseWeights {
  mode: QuantMode;
  /** The quantization (null for float32 weights). */
  scheme: QuantScheme | null;
  /** Float tensors (all of them for 'none'; norms and biases otherwise), F32/F16/BF16. */
  float: Map<string, TensorLocation>;
  quant: Map<string, QuantizedWeight>;
  /** Identity of these weights for graph cache keys. */
  key: string;
}

export function weightCacheRoot(graphCacheDir: string): string {
  return process.env.FEDLORA_WEIGHT_CACHE ?? join(graphCacheDir, 'weights');
}

/** Quantized tensors: every Linear weight, the embedding, and lm_head (when not tied). */
function quantizedNames(ckpt: Checkpoint): string[] {
  const names = [...ckpt.tensors.keys()].filter((n) => /^model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj\.weight$/.test(n));
  names.push('model.embed_tokens.weight');
  if (!ckpt.config.tieWordEmbeddings && ckpt.tensors.has('lm_head.weight')) names.push('lm_head.weight');
  return names;
}

const isLayerWeight = (name: string) => name.startsWith('model.layers.');

/** Whether the cache holds W^T for `name`: the embedding needs it only when it is also the (tied)
 *  lm_head, whose input gradient flows; a decoder layer's weight not when the scheme dequantizes it. */
const needsTranspose = (ckpt: Checkpoint, name: string, scheme: QuantScheme) =>
  isLayerWeight(name) ? scheme.layerBackward === 'transposed' : name !== 'model.embed_tokens.weight' || ckpt.config.tieWordEmbeddings || !ckpt.tensors.has('lm_head.weight');

/** Rows [r0, r1) of a [rows, cols] checkpoint tensor as float32 (a bounded read, whatever the dtype). */
function rowReader(t: TensorLocation): (r0: number, r1: number) => Float32Array {
  const cols = t.shape.length === 2 ? t.shape[1] : t.shape[0];
  const width = t.dtype === 'F32' ? 4 : 2;
  return (r0, r1) => {
    const bytes = Buffer.allocUnsafe((r1 - r0) * cols * width);
    const fd = openSync(t.file, 'r');
    try {
      let done = 0;
      while (done < bytes.length) {
        const n = readSync(fd, bytes, done, Math.min(bytes.length - done, 1 << 30), t.offset + r0 * cols * width + done);
        if (n <= 0) throw fail('FEDLORA_ERR_SAFETENSORS', `${t.file}: tensor "${t.name}" is truncated`);
        done += n;
      }
    } finally {
      closeSync(fd);
    }
    return toFloat32(bytes, t.dtype);
  };
}

function cacheTag(mode: QuantMode): string {
  if (mode === 'none') return `f32-${WEIGHT_CACHE_VERSION}`;
  const s = QUANT_SCHEMES[mode];
  return `${mode}-b${s.block}-t${s.backwardBlock}${s.layerBackward === 'dequantize' ? '-dq' : ''}-${WEIGHT_CACHE_VERSION}`;
}

interface CacheMeta {
  manifestSha256: string;
  source: string;
  tag: string;
  seconds: number;
}

/** Tensor specs of a cache file and how to produce each one's bytes. */
function cachePlan(ckpt: Checkpoint, mode: QuantMode): { specs: TensorSpec[]; produce: (spec: TensorSpec, write: (b: Uint8Array) => void) => void } {
  if (mode === 'none') {
    const specs = [...ckpt.tensors.values()].map((t) => ({ name: t.name, dtype: 'F32' as const, shape: t.shape }));
    return {
      specs,
      produce: (spec, write) => {
        const t = ckpt.tensors.get(spec.name)!;
        const rows = t.shape.length === 2 ? t.shape[0] : 1;
        const read = rowReader(t.shape.length === 2 ? t : { ...t, shape: [t.shape[0]] });
        const step = Math.max(1, Math.floor((16 * 1024 * 1024) / (t.shape.length === 2 ? t.shape[1] : t.shape[0])));
        for (let r0 = 0; r0 < rows; r0 += step) {
          const w = read(r0, Math.min(rows, r0 + step));
          write(new Uint8Array(w.buffer, w.byteOffset, w.byteLength));
        }
      },
    };
  }
  const scheme = QUANT_SCHEMES[mode];
  const { bits, block, backwardBlock } = scheme;
  const specs: TensorSpec[] = [];
  for (const name of quantizedNames(ckpt)) {
    const [rows, cols] = ckpt.tensors.get(name)!.shape;
    const l = { rows, cols, bits, block }, lt = { rows: cols, cols: rows, bits, block: backwardBlock };
    specs.push({ name: `${name}.q`, dtype: 'U8', shape: [rows, rowBytes(l)] }, { name: `${name}.s`, dtype: 'F32', shape: [rows, blocksPerRow(l)] });
    if (needsTranspose(ckpt, name, scheme)) specs.push({ name: `${name}.t.q`, dtype: 'U8', shape: [cols, rowBytes(lt)] }, { name: `${name}.t.s`, dtype: 'F32', shape: [cols, blocksPerRow(lt)] });
  }
  // one weight quantized at a time: its four tensors are written one after the other (sorted names)
  let current: { name: string; m: QuantizedMatrix } | null = null;
  return {
    specs,
    produce: (spec, write) => {
      const base = spec.name.replace(/(\.t)?\.[qs]$/, '');
      if (current?.name !== base) {
        const t = ckpt.tensors.get(base)!;
        current = { name: base, m: quantizeMatrix(rowReader(t), t.shape[0], t.shape[1], bits, block, needsTranspose(ckpt, base, scheme) ? backwardBlock : null) };
      }
      const m = current.m;
      const part = spec.name.endsWith('.t.q') ? m.t!.data : spec.name.endsWith('.t.s') ? m.t!.scales : spec.name.endsWith('.q') ? m.data : m.scales;
      write(part instanceof Float32Array ? new Uint8Array(part.buffer, part.byteOffset, part.byteLength) : part);
    },
  };
}

function readMeta(dir: string): CacheMeta | null {
  try {
    return JSON.parse(readFileSync(join(dir, 'meta.json'), 'utf8')) as CacheMeta;
  } catch {
    return null;
  }
}

/** Build (or reuse) the cache entry of (checkpoint, mode); returns the folder holding weights.safetensors. */
export function ensureWeightCache(
  ckpt: Checkpoint, mode: QuantMode, root: string, log: (msg: string) => void = () => {}, graphRoot: string | null = null,
): { dir: string; built: boolean; seconds: number } {
  if (!ckpt.manifestSha256) throw fail('FEDLORA_ERR_INTERNAL', `${ckpt.dir}: the weight cache needs the checkpoint's manifest (read it without skipManifest)`);
  const tag = cacheTag(mode);
  // the manifest's sha256 names the entry (hashed again: test checkpoints may use any string)
  const dir = join(root, `${createHash('sha256').update(ckpt.manifestSha256).digest('hex').slice(0, 24)}-${tag}`);
  const meta = readMeta(dir);
  if (meta && meta.manifestSha256 === ckpt.manifestSha256 && existsSync(join(dir, 'weights.safetensors'))) return { dir, built: false, seconds: meta.seconds };
  mkdirSync(root, { recursive: true });
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp);
  const t0 = performance.now();
  log(`preparing ${mode === 'none' ? 'float32' : mode} weights of ${ckpt.dir} in ${dir} (once per checkpoint)`);
  try {
    const plan = cachePlan(ckpt, mode);
    writeSafetensorsStream(join(tmp, 'weights.safetensors'), plan.specs, plan.produce, { format: 'fedlora-weight-cache', tag });
    const seconds = (performance.now() - t0) / 1000;
    writeFileSync(join(tmp, 'meta.json'), JSON.stringify({ manifestSha256: ckpt.manifestSha256, source: ckpt.dir, tag, seconds } satisfies CacheMeta, null, 2));
    rmSync(dir, { recursive: true, force: true });
    renameSync(tmp, dir);
    pruneStale(root, ckpt, tag, dir, graphRoot);
    return { dir, built: true, seconds };
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** Remove entries of the same checkpoint folder and mode made from older contents, and the graph
 *  folders that hard-link their weights (a link would keep the gigabytes on disk). */
function pruneStale(root: string, ckpt: Checkpoint, tag: string, keep: string, graphRoot: string | null): void {
  for (const name of readdirSync(root)) {
    const dir = join(root, name);
    if (dir === keep || !name.endsWith(`-${tag}`)) continue;
    const m = readMeta(dir);
    if (!m || m.source !== ckpt.dir || m.tag !== tag || m.manifestSha256 === ckpt.manifestSha256) continue;
    if (graphRoot) unlinkGraphsOf(join(dir, 'weights.safetensors'), graphRoot);
    rmSync(dir, { recursive: true, force: true });
  }
}

function unlinkGraphsOf(file: string, graphRoot: string): void {
  let ino: number;
  try { ino = statSync(file).ino; } catch { return; }
  for (const g of existsSync(graphRoot) ? readdirSync(graphRoot) : []) {
    const dir = join(graphRoot, g);
    try {
      if (readdirSync(dir).some((f) => f.endsWith('.safetensors') && statSync(join(dir, f)).ino === ino)) rmSync(dir, { recursive: true, force: true });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // not a graph folder (or gone meanwhile): nothing to do; anything else leaves a folder that
      // still links the old weights, so it is said (the new weights are prepared either way)
      if (code !== 'ENOENT' && code !== 'ENOTDIR') process.emitWarning(`could not remove ${dir}, a compiled graph of replaced weights (${(e as Error).message}); delete it by hand to free its disk space`, 'FedloraCacheWarning');
    }
  }
}

/** The weights a graph of `mode` reads, preparing the cache on first use. */
export function prepareBaseWeights(ckpt: Checkpoint, mode: QuantMode, root: string, log?: (msg: string) => void, graphRoot: string | null = null): BaseWeights {
  const allF32 = [...ckpt.tensors.values()].every((t) => t.dtype === 'F32');
  if (mode === 'none' && allF32) return { mode, scheme: null, float: ckpt.tensors, quant: new Map(), key: `ckpt:${ckpt.manifestSha256}` };
  const { dir } = ensureWeightCache(ckpt, mode, root, log, graphRoot);
  const file = join(dir, 'weights.safetensors');
  const entries = readSafetensorsHeader(file).entries;
  const loc = (name: string): RawLocation => {
    const e: SafetensorsEntry | undefined = entries.get(name);
    if (!e) throw fail('FEDLORA_ERR_MODEL_FILES', `${file}: weight cache lacks "${name}"; delete ${dir} to rebuild it`);
    return { file, offset: e.offset, length: e.length };
  };
  const key = `${ckpt.manifestSha256}:${cacheTag(mode)}`;
  if (mode === 'none') {
    const float = new Map<string, TensorLocation>();
    for (const t of ckpt.tensors.values()) float.set(t.name, { ...t, dtype: 'F32', ...loc(t.name) });
    return { mode, scheme: null, float, quant: new Map(), key };
  }
  const quant = new Map<string, QuantizedWeight>();
  const names = quantizedNames(ckpt);
  for (const name of names) {
    const [rows, cols] = ckpt.tensors.get(name)!.shape;
    quant.set(name, {
      rows, cols, data: loc(`${name}.q`), scales: loc(`${name}.s`),
      t: needsTranspose(ckpt, name, QUANT_SCHEMES[mode]) ? { data: loc(`${name}.t.q`), scales: loc(`${name}.t.s`) } : null,
    });
  }
  const float = new Map([...ckpt.tensors].filter(([n]) => !quant.has(n)));
  return { mode, scheme: QUANT_SCHEMES[mode], float, quant, key };
}
