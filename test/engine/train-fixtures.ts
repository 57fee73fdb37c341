// Shared fixtures of the training tests: a tiny llama in a temp folder and a synthetic task with a
// learnable pattern (runs of consecutive digits: after "3" comes "4"), in token and JSONL form.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeTinyModel } from '../../site-agent/engine/checkpoint/tiny.ts';
import { readCheckpoint } from '../../site-agent/engine/checkpoint/read.ts';
import type { Checkpoint, Example } from '../../site-agent/engine/types.ts';
import type { LoraConfig } from '../../shared/lora/types.ts';
import { Rng } from '../../shared/prng.ts';

export function tempDir(prefix: string): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `fedlora-${prefix}-`));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export function tinyModel(dir: string, opts: { layers?: number; hidden?: number; seed?: number } = {}): Checkpoint {
  writeTinyModel({ arch: 'llama', out: dir, seed: opts.seed ?? 1, layers: opts.layers ?? 2, hidden: opts.hidden ?? 64, heads: 4, kvHeads: 2 });
  return readCheckpoint(dir);
}

export const DIGIT0 = 48; // byte tokenizer: "0" is token 48 (bytes map to ids 0..255)

/** n examples of `len` consecutive digits (mod 10) from random starts. */
export function digitRuns(n: number, len: number, seed: number): Example[] {
  const rng = Rng.derive(seed, 'digit-runs');
  return Array.from({ length: n }, () => {
    const a = rng.nextInt(10);
    const ids = Array.from({ length: len }, (_, t) => DIGIT0 + ((a + t) % 10));
    return { inputIds: ids, labels: [...ids] };
  });
}

/** The same task as prompt/completion JSONL text: "count from 3:" -> " 4 5 6 ...". */
export function digitJsonl(file: string, n: number, seed: number, bad?: { line: number; text: string }): void {
  const rng = Rng.derive(seed, 'digit-jsonl');
  const lines: string[] = [];
  for (let i = 0; i < n; i++) {
    const a = rng.nextInt(10);
    lines.push(JSON.stringify({ prompt: `count from ${a}:`, completion: ' ' + Array.from({ length: 6 }, (_, t) => (a + 1 + t) % 10).join(' ') }));
  }
  if (bad) lines.splice(bad.line - 1, 0, bad.text);
  writeFileSync(file, lines.join('\n') + '\n');
}

export const LORA: LoraConfig = { r: 4, alpha: 8, targets: ['q_proj', 'v_proj'], dropout: 0, useRslora: false, freezeA: false, initSeed: 0 };

export function adapterBytes(a: Map<string, { data: Float32Array }>): Buffer {
  return Buffer.concat([...a.keys()].sort().map((k) => Buffer.from(a.get(k)!.data.buffer, a.get(k)!.data.byteOffset, a.get(k)!.data.byteLength)));
}
