// What every piece of the agent's work on a task is given: the site's parts, passed in once as
// one typed object (TaskDeps), so a step of a round (train-round.ts), an evaluation
// (evaluate-task.ts) or a delivery (outbox-delivery.ts) names what it uses and never reaches
// back into the SiteAgent that built it.

import type { AuditLog } from '../../shared/audit.ts';
import { fail } from '../../shared/errors.ts';
import type { LoraConfig, LoraTarget } from '../../shared/lora/types.ts';
import type { SiteConfig } from '../config.ts';
import type { GlobalEvaluatedHook, GlobalVerifiedHook } from './global-adapter.ts';
import type { SiteOutbox } from './outbox.ts';
import type { Trainer } from './trainers.ts';
import type { FederationWire, WireTask } from './wire.ts';
import type { SiteWorkspace } from './workspace.ts';
import type { ReviewEgress } from '../serve/review/egress.ts';

export interface AgentLogger {
  info(obj: Record<string, unknown>, msg: string): void;
  warn(obj: Record<string, unknown>, msg: string): void;
  error(obj: Record<string, unknown>, msg: string): void;
}

export type AgentState = 'starting' | 'connecting' | 'idle' | 'training' | 'uploading' | 'evaluating' | 'stopped';

/** What the agent shows on its status page and in its heartbeats. */
export interface AgentStatus {
  state: AgentState;
  connected: boolean;
  currentTaskId: string;
  lastError: string | null;
  rounds: { jobId: string; round: number; status: string; at: string }[];
  trainingTokensPerSecond: number;
}

export interface TaskDeps {
  siteId: string;
  config: SiteConfig;
  wire: FederationWire;
  log: AgentLogger;
  /** The site's tamper-evident audit log: every egress is recorded there. */
  audit: AuditLog;
  /** Updates recorded before their first byte is sent (resumed after a crash, never redone). */
  outbox: SiteOutbox;
  /** The base model, verified global adapters, the site's datasets and evaluation. */
  workspace: SiteWorkspace;
  trainer: Trainer;
  /** Steps set `state` (and training sets `trainingTokensPerSecond`) for heartbeats. */
  status: Pick<AgentStatus, 'state' | 'trainingTokensPerSecond'>;
  /** Aborted when the agent stops: long work (training, secure aggregation) ends early. */
  signal: AbortSignal;
  /** The site's private key (PEM), read at each use: a renewed certificate comes with a new key. */
  siteKeyPem(): string;
  /** Run once for each newly verified global adapter version (global-adapter.ts). */
  onGlobalVerified: readonly GlobalVerifiedHook[];
  /** Run after each held-out evaluation of a global adapter here (evaluate-task.ts). */
  onGlobalEvaluated?: GlobalEvaluatedHook;
  /** The doctors' review aggregates of the job's versions not sent yet (sent with its evaluations). */
  reviewEgress?: ReviewEgress;
}

/** The local base model must be the job's, byte for byte (manifest of file hashes). */
export async function checkBaseModel(deps: Pick<TaskDeps, 'workspace' | 'config'>, task: Pick<WireTask, 'baseModel'>): Promise<void> {
  const want = task.baseModel;
  const manifest = await deps.workspace.modelManifestSha256();
  if (want.manifestSha256 && manifest !== want.manifestSha256) {
    throw fail('FEDLORA_ERR_MODEL_MISMATCH', `the job's base model ${want.id} has manifest ${want.manifestSha256.slice(0, 12)}…; the local copy at ${deps.config.model.path} has ${manifest.slice(0, 12)}…`);
  }
}

/** The job's LoRA settings as the task carries them. */
export function loraOfTask(task: Pick<WireTask, 'lora'>): LoraConfig {
  return {
    r: task.lora.r,
    alpha: task.lora.alpha,
    targets: task.lora.targetModules as LoraTarget[],
    dropout: task.lora.dropout,
    useRslora: task.lora.useRslora,
    freezeA: task.lora.freezeA,
    initSeed: Number(task.lora.initSeed),
  };
}

/** The fields every log line about a task carries. */
export function taskLogFields(task: Pick<WireTask, 'jobId' | 'round' | 'taskId'>): { job: string; round: number; task: string } {
  return { job: task.jobId, round: task.round, task: task.taskId };
}
