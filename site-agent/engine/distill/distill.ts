// Knowledge distillation of a teacher model into a student's LoRA adapter:
//   1. teacher and student must share a tokenizer (tokenizer-match.ts);
//   2. the teacher's top-k next-token distributions at temperature T are computed once over the
//      data and stored (teacher-logits.ts), then the teacher's sessions are released;
//   3. the student's adapter is trained by the ordinary LoRA loop (trainer.ts) on the distillation
//      head: loss = (1 − α)·CE + α·T²·KL(p_teacher^T || p_student^T) over the stored support
//      (kl-head.ts); T² keeps the KL gradient's scale independent of T (Hinton et al. 2015).

import { join } from 'node:path';
import { fail } from '../../../shared/errors.ts';
import type { AdapterWeights, LoraConfig } from '../../../shared/lora/types.ts';
import { readCheckpoint } from '../checkpoint/read.ts';
import { validateAdapterAgainst } from '../../../shared/lora/peft.ts';
import { loadJsonlExamples } from '../data/jsonl.ts';
import type { DistillHeadSpec } from '../model.ts';
import { createTrainStepSession, graphCacheDir } from '../session.ts';
import { loadTokenizer } from '../tokenizer.ts';
import { trainLora, type SessionFactory, type TrainMetrics, type TrainOptions } from '../train/trainer.ts';
import type { Checkpoint, Example } from '../types.ts';
import { teacherRowsFor } from './batch-rows.ts';
import { teacherLogits } from './teacher-logits.ts';
import { requireSameTokenizer } from './tokenizer-match.ts';

/** Defaults: T = 2 softens the teacher enough to show its ranking of the runner-up tokens; k = 32
 *  holds nearly all of a trained model's mass at T = 2 (the rest is kept as one bucket); α = 0.5. */
export const DISTILL_DEFAULTS = { topK: 32, temperature: 2, alpha: 0.5 } as const;

export interface DistillSettings {
  topK?: number;
  temperature?: number;
  alpha?: number;
}

export interface DistillOptions extends DistillSettings, Omit<TrainOptions, 'model' | 'examples' | 'data' | 'sessionFactory'> {
  teacher: string;
  /** A PEFT adapter applied to the teacher (its weights and LoRA settings), or none. */
  teacherAdapter?: { weights: AdapterWeights; lora: LoraConfig } | null;
  student: string;
  /** Training examples (tokenised with the shared tokenizer), or `data`: a JSONL file. */
  examples?: Example[];
  data?: string;
  /** Where teacher stores live; default <graph cache>/teacher-logits. */
  teacherCacheDir?: string;
}

export interface DistillMetrics {
  settings: { topK: number; temperature: number; alpha: number; teacher: string; student: string; teacherAdapter: boolean };
  teacherStore: { key: string; dir: string; reused: boolean; positions: number; topkMass: number };
  /** Per optimizer step: the mixed loss, its cross-entropy and KL parts (means over counted tokens). */
  lossPerStep: number[];
  cePerStep: number[];
  klPerStep: number[];
  train: TrainMetrics;
}

export interface DistillResult {
  adapter: AdapterWeights;
  metrics: DistillMetrics;
  interrupted: boolean;
  examples: Example[];
  student: Checkpoint;
}

export function distillHead(s: DistillSettings): DistillHeadSpec {
  const head = { topK: s.topK ?? DISTILL_DEFAULTS.topK, temperature: s.temperature ?? DISTILL_DEFAULTS.temperature, alpha: s.alpha ?? DISTILL_DEFAULTS.alpha };
  if (!(head.alpha >= 0 && head.alpha <= 1)) throw fail('FEDLORA_ERR_CONFIG', `alpha ${head.alpha}: must be in [0, 1] (weight of the KL term)`);
  return head;
}

export async function distillLora(o: DistillOptions): Promise<DistillResult> {
  const head = distillHead(o);
  requireSameTokenizer(o.teacher, o.student);
  const student = readCheckpoint(o.student);
  const teacher = readCheckpoint(o.teacher);
  let examples = o.examples;
  if (!examples) {
    if (!o.data) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', 'distill: give `examples` or a `data` JSONL file');
    const maxSeqLen = o.maxSeqLen ?? o.seq ?? Math.min(512, student.config.maxPositionEmbeddings);
    examples = (await loadJsonlExamples(o.data, loadTokenizer(student.dir), { maxSeqLen, vocabSize: student.config.vocabSize })).examples;
  }
  if (examples.length === 0) throw fail('FEDLORA_ERR_DATASET', `no training examples${o.data ? ` in ${o.data}` : ''}`);
  if (o.teacherAdapter) validateAdapterAgainst(teacher.config, o.teacherAdapter.weights, o.teacherAdapter.lora, `teacher adapter (teacher ${teacher.dir})`);
  const vocab = Math.min(student.config.vocabSize, teacher.config.vocabSize);
  const session = { device: o.device, quantize: o.quantize, log: o.log };
  const store = await teacherLogits({
    teacher, adapter: o.teacherAdapter ?? null, examples, topK: head.topK, temperature: head.temperature, vocab,
    cacheDir: o.teacherCacheDir ?? join(graphCacheDir(), 'teacher-logits'), session,
  });
  o.log?.(`teacher store ${store.dir} (${store.reused ? 'reused' : 'computed'}; top-${head.topK} at T=${head.temperature} hold ${(100 * store.topkMass).toFixed(1)}% of the teacher's mass)`);

  const cePerStep: number[] = [], klPerStep: number[] = [];
  let ce = 0, kl = 0;
  const rows = teacherRowsFor(examples, store);
  const factory: SessionFactory = async (ckpt, lora, so) => {
    const s = await createTrainStepSession(ckpt, lora, { ...so, distill: { head, teacherRows: rows } });
    return {
      batch: s.batch, seq: s.seq, release: () => s.release(),
      async run(pb, params, ro) {
        const r = await s.run(pb, params, ro);
        ce += r.parts!.ce;
        kl += r.parts!.kl;
        return r;
      },
    };
  };
  const r = await trainLora({
    ...o, model: student, examples, sessionFactory: factory,
    onProgress: (ev) => {
      cePerStep.push(ce);
      klPerStep.push(kl);
      ce = 0;
      kl = 0;
      o.onProgress?.(ev);
    },
  });
  return {
    adapter: r.adapter, interrupted: r.interrupted, examples, student,
    metrics: {
      settings: { ...head, teacher: teacher.dir, student: student.dir, teacherAdapter: !!o.teacherAdapter },
      teacherStore: { key: store.key, dir: store.dir, reused: store.reused, positions: store.offsets[store.offsets.length - 1], topkMass: store.topkMass },
      lossPerStep: r.metrics.lossPerStep, cePerStep, klPerStep, train: r.metrics,
    },
  };
}

