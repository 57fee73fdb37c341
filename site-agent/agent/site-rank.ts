// A site below the job's LoRA rank (policy.max_lora_rank, accepted down to the job's
// lora.min_site_r) trains from the global adapter's best rank-k factors (with a frozen A: A's
// first k rows and the B that best keeps each product), with the job's scaling. Each site
// re-compresses the one published version itself rather than downloading a version per rank:
// the coordinator publishes and signs one adapter per round, and the re-compression is a few
// small QRs and SVDs (shared/lora/recompress.ts).
import { adapterWeightsAtRank, loraAtRank } from '../../shared/lora/rank.ts';
import type { AdapterWeights, LoraConfig } from '../../shared/lora/types.ts';
import { siteLoraRank } from './policy.ts';
import type { TaskDeps } from './task-context.ts';
import type { WireTask } from './wire.ts';

export interface SiteRankStart {
  lora: LoraConfig;
  start: AdapterWeights;
}

/** The rank-k settings and start of this site for a task, or null when it trains the job's rank
 *  (or declines the job: checked by the site-policy step). */
export function siteRankStart(deps: Pick<TaskDeps, 'config' | 'workspace'>, task: Pick<WireTask, 'lora'>, lora: LoraConfig, global: AdapterWeights): SiteRankStart | null {
  const rank = siteLoraRank(deps.config.policy, task.lora);
  if (!rank.ok || rank.r === lora.r) return null;
  const at = loraAtRank(lora, rank.r);
  return { lora: at, start: adapterWeightsAtRank(global, rank.r, { frozenA: lora.freezeA, initial: deps.workspace.initialAdapter(lora) }) };
}
