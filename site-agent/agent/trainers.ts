// Pluggable local trainers. The built-in one runs the ONNX Runtime LoRA engine in-process; the
// external-command trainer lets a site use its own PyTorch/PEFT or multi-GPU setup through the
// documented file contract (train-contract.ts; reference: deploy/trainers/peft_trainer.py).

import type { FederationTrainRequest, FederationTrainResult } from '../engine/index.ts';
import { runJobCommand } from './external-command.ts';
import { readTrainOutput, writeTrainJob } from './train-contract.ts';

/** One round of local training: the engine's request (the built-in trainer takes it as is)
 *  plus what the external-command contract needs. */
export interface LocalTrainRequest extends FederationTrainRequest {
  workDir: string;
  baseModelId: string;
}

export type LocalTrainResult = FederationTrainResult;

export interface Trainer {
  readonly kind: string;
  train(req: LocalTrainRequest): Promise<LocalTrainResult>;
}

/** The built-in trainer: the ONNX Runtime LoRA engine (site-agent/engine). */
class EngineTrainer implements Trainer {
  readonly kind = 'engine';
  async train(req: LocalTrainRequest): Promise<LocalTrainResult> {
    const engine = await import('../engine/index.ts');
    return engine.trainForFederation(req);
  }
}

/** A site's own trainer, run on a job folder (the file contract: train-contract.ts). */
export class CommandTrainer implements Trainer {
  readonly kind = 'command';
  constructor(private readonly argv: string[], private readonly timeoutS: number) {}

  async train(req: LocalTrainRequest): Promise<LocalTrainResult> {
    const jobFile = writeTrainJob(req);
    await runJobCommand({
      argv: this.argv, cwd: req.workDir, env: { FEDLORA_JOB: jobFile }, timeoutS: this.timeoutS, signal: req.signal,
      what: 'external trainer', timeoutField: 'trainer.timeout_s', code: 'FEDLORA_ERR_TRAINING',
    });
    return readTrainOutput(req.workDir, req.lora);
  }
}

export function createTrainer(cfg: { kind: 'engine' } | { kind: 'command'; command: string[]; timeout_s: number }): Trainer {
  return cfg.kind === 'engine' ? new EngineTrainer() : new CommandTrainer(cfg.command, cfg.timeout_s);
}
