// Merge a PEFT LoRA adapter into its base model: W' = W + scaling · B·A for every targeted
// projection, written as a complete Hugging Face checkpoint (same file names, same tensor
// layout, same dtypes), so any runtime (vLLM, transformers, ours) serves it without PEFT.
//
// Streaming: the dtype and shape of every tensor stay the same, so each output safetensors file has
// the input's header byte for byte; we copy the file in chunks and replace only the bytes of the
// targeted weights, one tensor at a time (never the whole model in memory). The sum is formed in
// float64 and rounded once to the base dtype (PEFT on CPU rounds the delta, then the sum).

import { closeSync, copyFileSync, existsSync, fsyncSync, mkdirSync, openSync, readSync, readdirSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { fail } from '../../shared/errors.ts';
import { encodeFloats, toFloat32 } from '../../shared/safetensors.ts';
import { readPeftAdapter, validateAdapterAgainst } from '../../shared/lora/peft.ts';
import { readCheckpoint, listWeightFiles } from './checkpoint/read.ts';
import { loraKey, loraScaling, parentOf, ALL_TARGETS } from '../../shared/lora/keys.ts';
import type { TensorLocation } from './types.ts';

const CHUNK = 16 * 1024 * 1024;

export interface MergeResult {
  outDir: string;
  mergedTensors: string[];
  scaling: number;
  files: string[];
}

/** W + s·B·A, in float32 (rounded once from a float64 sum). W is [out, in], B [out, r], A [r, in]. */
function mergedWeight(w: Float32Array, a: Float32Array, b: Float32Array, out: number, inF: number, r: number, s: number): Float32Array {
  const res = new Float32Array(out * inF);
  const row = new Float64Array(inF);
  for (let o = 0; o < out; o++) {
    row.fill(0);
    for (let k = 0; k < r; k++) {
      const bk = b[o * r + k];
      if (bk === 0) continue;
      const aOff = k * inF;
      for (let i = 0; i < inF; i++) row[i] += bk * a[aOff + i];
    }
    const off = o * inF;
    for (let i = 0; i < inF; i++) res[off + i] = w[off + i] + s * row[i];
  }
  return res;
}

function copyRange(src: number, dst: number, from: number, to: number, buf: Buffer): void {
  let pos = from;
  while (pos < to) {
    const n = readSync(src, buf, 0, Math.min(buf.length, to - pos), pos);
    if (n <= 0) throw fail('FEDLORA_ERR_IO', `unexpected end of file at byte ${pos}`);
    writeSync(dst, buf, 0, n);
    pos += n;
  }
}

export function mergeAdapter(modelDir: string, adapterDir: string, outDir: string): MergeResult {
  const src = resolve(modelDir);
  const out = resolve(outDir);
  if (src === out) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `mergeAdapter: the output folder must differ from the model folder (${src})`);
  const ckpt = readCheckpoint(src, { skipManifest: true });
  const adapter = readPeftAdapter(adapterDir);
  validateAdapterAgainst(ckpt.config, adapter.weights, adapter.config);
  const s = loraScaling({ r: adapter.config.r, alpha: adapter.config.alpha, useRslora: adapter.config.useRslora });

  // Which base tensor gets which (A, B).
  const plan = new Map<string, { loc: TensorLocation; a: string; b: string }>();
  for (let l = 0; l < ckpt.config.numLayers; l++) {
    for (const t of ALL_TARGETS) {
      if (!adapter.config.targets.includes(t)) continue;
      const name = `model.layers.${l}.${parentOf(t)}.${t}.weight`;
      plan.set(name, { loc: ckpt.tensors.get(name)!, a: loraKey(l, t, 'A'), b: loraKey(l, t, 'B') });
    }
  }

  mkdirSync(out, { recursive: true });
  const { files: weightFiles } = listWeightFiles(src);
  const buf = Buffer.allocUnsafe(CHUNK);
  for (const wf of weightFiles) {
    const inPath = join(src, wf);
    const targets = [...plan.values()].filter((p) => p.loc.file === inPath).sort((x, y) => x.loc.offset - y.loc.offset);
    const tmp = join(out, `${wf}.tmp-${process.pid}`);
    const fin = openSync(inPath, 'r');
    const fout = openSync(tmp, 'w');
    try {
      let pos = 0;
      for (const p of targets) {
        copyRange(fin, fout, pos, p.loc.offset, buf);
        const raw = Buffer.alloc(p.loc.length);
        if (readSync(fin, raw, 0, p.loc.length, p.loc.offset) !== p.loc.length) throw fail('FEDLORA_ERR_SAFETENSORS', `${inPath}: tensor "${p.loc.name}" is truncated`);
        const w = toFloat32(raw, p.loc.dtype);
        const A = adapter.weights.get(p.a)!;
        const B = adapter.weights.get(p.b)!;
        const [o, i] = p.loc.shape;
        const merged = mergedWeight(w, A.data, B.data, o, i, adapter.config.r, s);
        writeSync(fout, encodeFloats(merged, p.loc.dtype));
        pos = p.loc.offset + p.loc.length;
      }
      copyRange(fin, fout, pos, statSync(inPath).size, buf);
      fsyncSync(fout);
    } catch (e) {
      closeSync(fout);
      rmSync(tmp, { force: true });
      throw e;
    } finally {
      closeSync(fin);
    }
    closeSync(fout);
    renameSync(tmp, join(out, wf));
  }
  // Everything else in the folder (config, tokenizer, generation config, index, README...).
  const copied: string[] = [...weightFiles];
  for (const f of readdirSync(src)) {
    if (weightFiles.includes(f)) continue;
    const p = join(src, f);
    if (!statSync(p).isFile()) continue;
    copyFileSync(p, join(out, basename(f)));
    copied.push(f);
  }
  if (!existsSync(join(out, 'config.json'))) throw fail('FEDLORA_ERR_IO', `${out}: config.json was not copied`);
  return { outDir: out, mergedTensors: [...plan.keys()], scaling: s, files: copied.sort() };
}
