// What one local training at the site is asked to do: the job's settings from the task, the
// site's model and limits from its config. Used for the round's training, the local-only
// baseline and the personalised adapter.
import { isAbsolute, join } from 'node:path';
import { teachersDir } from './distill-teacher.ts';
import type { AdapterWeights, LoraConfig } from '../../shared/lora/types.ts';
import type { TaskDeps } from './task-context.ts';
import type { LocalTrainRequest } from './trainers.ts';
import type { WireTask } from './wire.ts';

export interface TrainingOf {
  task: WireTask;
  lora: LoraConfig;
  /** The task's scratch folder: each run trains in its own subfolder. */
  workDir: string;
  trainFile: string;
}

export function localTrainRequest(deps: TaskDeps, t: TrainingOf, run: 'global' | 'local' | 'personal', initAdapter: AdapterWeights, steps = t.task.train.localSteps): LocalTrainRequest {
  const { task } = t;
  return {
    workDir: join(t.workDir, run),
    modelDir: deps.config.model.path,
    baseModelId: task.baseModel.id,
    device: deps.config.model.device,
    quantize: deps.config.model.quantize,
    recompute: deps.config.training.recompute,
    lora: t.lora,
    train: {
      steps,
      epochs: task.train.localEpochs,
      learningRate: task.train.learningRate,
      optimizer: (task.train.optimizer || 'adamw') as 'adamw' | 'sgd',
      batchTokens: task.train.batchTokens,
      seed: Number(task.train.seed), // already this round's seed (job seed + round, see TrainSpec.seed)
      proxMu: task.train.proxMu,
      weightDecay: task.train.weightDecay,
      warmupSteps: task.train.warmupSteps,
      maxGradNorm: task.train.maxGradNorm,
    },
    initAdapter,
    ...(task.train.distill?.teacher ? { distill: { teacherDir: isAbsolute(task.train.distill.teacher) ? task.train.distill.teacher : join(teachersDir(deps.config), task.train.distill.teacher), topK: task.train.distill.topK, temperature: task.train.distill.temperature, alpha: task.train.distill.alpha } } : {}),
    trainFile: t.trainFile,
    maxSeqLen: deps.config.training.max_seq_len,
    signal: deps.signal,
    onProgress: (ev) => {
      deps.status.trainingTokensPerSecond = ev.tokensPerSecond;
    },
  };
}
