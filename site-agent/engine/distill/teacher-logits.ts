// The teacher's next-token distributions, computed once and stored on disk, so the teacher and the
// student are never in memory together and a second run over the same data reuses them.
//
// For every position that has a training target (labels != -100 after the shift), the store holds
// the teacher's top-k token ids, their log-probabilities at temperature T and the log-mass of all
// other tokens (topk-math.ts). Files of one store, in <cache>/<key>/:
//   meta.json   settings, key parts, stored positions per example
//   ids.i32     int32  [positions, k]
//   logp.f32    float32 [positions, k]
//   rest.f32    float32 [positions]
// The key is a hash of the teacher's manifest, its adapter, the tokenised data, k, T and the vocabulary
// the two models share, so anything that changes the numbers gives another folder.

import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fail } from '../../../shared/errors.ts';
import { sha256Hex } from '../../../shared/hash.ts';
import type { AdapterWeights, LoraConfig } from '../../../shared/lora/types.ts';
import { IGNORE_INDEX } from '../data/examples.ts';
import { examplesDigest } from '../train/trainer.ts';
import type { SessionOptions } from '../session.ts';
import type { Checkpoint, Example } from '../types.ts';
import { openLogitsPass } from './logits-pass.ts';
import { teacherRow, type TeacherRow } from './topk-math.ts';

const FORMAT = 'fedlora-teacher-topk-1';

export interface TeacherStoreSettings {
  topK: number;
  temperature: number;
  /** Ids below this are candidates for the top-k (the vocabulary teacher and student share). */
  vocab: number;
}

export interface TeacherStore extends TeacherStoreSettings {
  key: string;
  dir: string;
  /** True when the store was already on disk (no teacher pass ran). */
  reused: boolean;
  /** First stored position of each example (offsets[e + 1] − offsets[e] positions). */
  offsets: number[];
  ids: Int32Array;
  logp: Float32Array;
  rest: Float32Array;
  /** Mean probability mass of the teacher's top-k over the stored positions (1 − mean rest mass). */
  topkMass: number;
}

/** Positions t of an example that predict a target (labels[t + 1] != -100), in order. */
export function targetPositions(ex: Example): number[] {
  const out: number[] = [];
  for (let t = 0; t + 1 < ex.inputIds.length; t++) if (ex.labels[t + 1] !== IGNORE_INDEX) out.push(t);
  return out;
}

/** Identity of a teacher adapter: its LoRA settings and every tensor's bytes. */
function adapterDigest(a: { weights: AdapterWeights; lora: LoraConfig } | null): string | null {
  if (!a) return null;
  const parts = [...a.weights.keys()].sort().map((k) => {
    const t = a.weights.get(k)!;
    return `${k}:${t.shape}:${sha256Hex(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength))}`;
  });
  return sha256Hex(JSON.stringify({ r: a.lora.r, alpha: a.lora.alpha, rs: a.lora.useRslora, targets: a.lora.targets, parts }));
}

export interface TeacherPassOptions extends TeacherStoreSettings {
  teacher: Checkpoint;
  adapter: { weights: AdapterWeights; lora: LoraConfig } | null;
  examples: Example[];
  cacheDir: string;
  session?: SessionOptions;
}

/** What a store is of (teacher, its adapter, the examples, k, T, vocabulary) and the key naming
 *  it; the digests are computed once and also written into meta.json. */
function storeIdentity(o: TeacherPassOptions): { key: string; adapter: string | null; data: string } {
  const adapter = adapterDigest(o.adapter), data = examplesDigest(o.examples);
  const key = sha256Hex(JSON.stringify({ format: FORMAT, teacher: o.teacher.manifestSha256, adapter, data, k: o.topK, T: o.temperature, vocab: o.vocab })).slice(0, 32);
  return { key, adapter, data };
}

/** The stored teacher distributions for `examples`, computing and writing them on first use. */
export async function teacherLogits(o: TeacherPassOptions): Promise<TeacherStore> {
  if (!Number.isInteger(o.topK) || o.topK < 1 || o.topK >= o.vocab) throw fail('FEDLORA_ERR_CONFIG', `top_k ${o.topK}: must be an integer in [1, ${o.vocab}) (the shared vocabulary)`);
  if (!(o.temperature > 0) || !Number.isFinite(o.temperature)) throw fail('FEDLORA_ERR_CONFIG', `temperature ${o.temperature}: must be a positive number`);
  const { key, adapter, data } = storeIdentity(o);
  const dir = join(o.cacheDir, key);
  if (existsSync(join(dir, 'meta.json'))) return readStore(dir, key, o);

  const offsets = [0];
  for (const ex of o.examples) offsets.push(offsets[offsets.length - 1] + targetPositions(ex).length);
  const P = offsets[offsets.length - 1], k = o.topK;
  const ids = new Int32Array(P * k), logp = new Float32Array(P * k), rest = new Float32Array(P);
  const V = o.teacher.config.vocabSize;
  const pass = openLogitsPass(o.teacher, o.adapter, o.session);
  let restMass = 0;
  try {
    for (const [e, ex] of o.examples.entries()) {
      const z = await pass.run(ex.inputIds);
      targetPositions(ex).forEach((t, j) => {
        const row: TeacherRow = teacherRow(z, t * V, V, o.vocab, k, o.temperature);
        const at = offsets[e] + j;
        ids.set(row.ids, at * k);
        logp.set(row.logp, at * k);
        rest[at] = row.rest;
        restMass += Math.exp(row.rest);
      });
    }
  } finally {
    await pass.release();
  }
  const topkMass = P > 0 ? 1 - restMass / P : 1;
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  writeFileSync(join(tmp, 'ids.i32'), new Uint8Array(ids.buffer));
  writeFileSync(join(tmp, 'logp.f32'), new Uint8Array(logp.buffer));
  writeFileSync(join(tmp, 'rest.f32'), new Uint8Array(rest.buffer));
  const meta = {
    format: FORMAT, teacher: o.teacher.dir, teacherManifest: o.teacher.manifestSha256, adapter, data,
    topK: k, temperature: o.temperature, vocab: o.vocab, positions: P, topkMass, offsets,
  };
  writeFileSync(join(tmp, 'meta.json'), JSON.stringify(meta));
  try {
    renameSync(tmp, dir);
  } catch (e) {
    // another run wrote the same store meanwhile: same key, same numbers
    rmSync(tmp, { recursive: true, force: true });
    if (!existsSync(join(dir, 'meta.json'))) throw fail('FEDLORA_ERR_IO', `cannot write the teacher store ${dir}: ${(e as Error).message}`);
  }
  return { key, dir, reused: false, topK: k, temperature: o.temperature, vocab: o.vocab, offsets, ids, logp, rest, topkMass };
}

function readStore(dir: string, key: string, o: TeacherStoreSettings): TeacherStore {
  const meta = JSON.parse(readFileSync(join(dir, 'meta.json'), 'utf8')) as { format: string; positions: number; topK: number; topkMass: number; offsets: number[] };
  const f32 = (name: string) => { const b = readFileSync(join(dir, name)); return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)); };
  const b = readFileSync(join(dir, 'ids.i32'));
  const ids = new Int32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
  const logp = f32('logp.f32'), rest = f32('rest.f32');
  const P = meta.positions;
  if (meta.format !== FORMAT || meta.topK !== o.topK || ids.length !== P * o.topK || logp.length !== P * o.topK || rest.length !== P) {
    throw fail('FEDLORA_ERR_IO', `teacher store ${dir} is damaged or of another format (expected ${P}×${o.topK} entries); delete the folder to recompute it`);
  }
  return { key, dir, reused: true, topK: o.topK, temperature: o.temperature, vocab: o.vocab, offsets: meta.offsets, ids, logp, rest, topkMass: meta.topkMass };
}

/** The stored rows of example `e` (one per target position). */
export function storedRows(s: TeacherStore, e: number): TeacherRow[] {
  const out: TeacherRow[] = [];
  for (let at = s.offsets[e]; at < s.offsets[e + 1]; at++) {
    out.push({ ids: Array.from(s.ids.subarray(at * s.topK, (at + 1) * s.topK)), logp: Array.from(s.logp.subarray(at * s.topK, (at + 1) * s.topK)), rest: s.rest[at] });
  }
  return out;
}
