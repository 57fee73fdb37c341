// Tiny teacher/student pairs for the distillation tests (engine, CLI, federation), made through the
// engine's public API only: two llama models of one shape and one byte tokenizer with different
// random weights, large enough initial scales that their next-token distributions are peaked and
// differ, and a random teacher adapter written as a PEFT folder.
import { writeFileSync } from 'node:fs';
import { initLoraAdapter, initTinyModel, readCheckpoint, train, writePeftAdapter, type AdapterWeights, type LoraConfig } from '../../site-agent/engine/index.ts';
import { Rng } from '../../shared/prng.ts';

export const TEACHER_LORA: LoraConfig = { r: 4, alpha: 8, targets: ['q_proj', 'v_proj', 'up_proj'], dropout: 0, useRslora: false, freezeA: false, initSeed: 5 };
export const STUDENT_LORA: LoraConfig = { r: 8, alpha: 16, targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], dropout: 0, useRslora: false, freezeA: false, initSeed: 0 };

export function tinyPairModel(dir: string, seed: number): string {
  initTinyModel({ arch: 'llama', out: dir, seed, layers: 2, hidden: 32, heads: 4, kvHeads: 2, initializerRange: 0.15, lmHeadStd: 0.6 });
  return dir;
}

/** A random adapter for the teacher (B non-zero, so it changes the teacher's predictions). */
export function teacherAdapter(modelDir: string, outDir: string): { dir: string; weights: AdapterWeights; lora: LoraConfig } {
  const weights = initLoraAdapter(readCheckpoint(modelDir, { skipManifest: true }).config, TEACHER_LORA);
  const rng = Rng.derive(9, 'teacher-adapter');
  for (const [k, t] of weights) if (k.includes('lora_B')) for (let i = 0; i < t.data.length; i++) t.data[i] = (rng.nextFloat() * 2 - 1) * 0.5;
  writePeftAdapter(outDir, weights, { r: TEACHER_LORA.r, alpha: TEACHER_LORA.alpha, targets: TEACHER_LORA.targets, dropout: 0, useRslora: false, baseModel: modelDir });
  return { dir: outDir, weights, lora: TEACHER_LORA };
}

/** A teacher that knows a task: TEACHER_LORA trained on `data` (so its top-1 tokens follow a pattern a
 *  student can learn, unlike a random network's), written as a PEFT folder. */
export async function trainedTeacherAdapter(modelDir: string, data: string, outDir: string, steps: number): Promise<{ dir: string; weights: AdapterWeights; lora: LoraConfig }> {
  const r = await train({ model: modelDir, data, lora: TEACHER_LORA, lr: 2e-2, steps, seed: 4, maxSeqLen: 64 });
  writePeftAdapter(outDir, r.adapter, { r: TEACHER_LORA.r, alpha: TEACHER_LORA.alpha, targets: TEACHER_LORA.targets, dropout: 0, useRslora: false, baseModel: modelDir });
  return { dir: outDir, weights: r.adapter, lora: TEACHER_LORA };
}

/** Prompt/completion lines of a small arithmetic-like task (the distributions, not the task, matter here). */
export function pairJsonl(file: string, n: number, seed: number): string {
  const rng = Rng.derive(seed, 'distill-jsonl');
  const lines: string[] = [];
  for (let i = 0; i < n; i++) {
    const a = rng.nextInt(10), b = rng.nextInt(10);
    lines.push(JSON.stringify({ prompt: `add ${a} ${b}:`, completion: ` ${a + b} ${(a * b) % 10} ${a}${b}` }));
  }
  writeFileSync(file, lines.join('\n') + '\n');
  return file;
}
