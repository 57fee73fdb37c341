// The site's own privacy policy, enforced by the agent on every task before any work is done.
// A refusal is sent back as DeclineTask with the reason, and recorded in the site audit log.

import type { SitePolicy } from '../config.ts';

export interface TaskPrivacyView {
  dpEnabled: boolean;
  epsilonAfterRound: number;
  secureAggregation: boolean;
  /** Sites the round will aggregate at least (the job's min_sites) and sites selected. */
  minSites: number;
  selectedSites: number;
}

export type PolicyDecision = { ok: true } | { ok: false; code: 'FEDLORA_ERR_POLICY' | 'FEDLORA_ERR_PRIVACY_BUDGET'; reason: string };

export function checkPolicy(policy: SitePolicy, t: TaskPrivacyView): PolicyDecision {
  const aggregated = Math.min(t.minSites || t.selectedSites, t.selectedSites || t.minSites);
  if (aggregated < policy.min_sites_per_aggregation) {
    return {
      ok: false,
      code: 'FEDLORA_ERR_POLICY',
      reason: `the round may aggregate as few as ${aggregated} site(s); this site's policy requires at least ${policy.min_sites_per_aggregation} (policy.min_sites_per_aggregation)`,
    };
  }
  if (policy.require_dp && !t.dpEnabled) {
    return { ok: false, code: 'FEDLORA_ERR_POLICY', reason: 'the job has no differential privacy; this site requires it (policy.require_dp)' };
  }
  if (policy.require_secure_aggregation && !t.secureAggregation) {
    return { ok: false, code: 'FEDLORA_ERR_POLICY', reason: 'the job does not use secure aggregation; this site requires it (policy.require_secure_aggregation)' };
  }
  if (policy.max_epsilon !== null) {
    const eps = t.dpEnabled ? t.epsilonAfterRound : Infinity;
    if (!(eps <= policy.max_epsilon)) {
      return {
        ok: false,
        code: 'FEDLORA_ERR_PRIVACY_BUDGET',
        reason: `the job's epsilon after this round would be ${t.dpEnabled ? eps.toFixed(4) : 'unbounded (no DP)'}; this site's maximum is ${policy.max_epsilon} (policy.max_epsilon)`,
      };
    }
  }
  return { ok: true };
}

export type RankDecision = { ok: true; r: number } | { ok: false; code: 'FEDLORA_ERR_POLICY'; reason: string };

/** The LoRA rank this site trains for a job of rank `r` that accepts sites down to `minSiteR`
 *  (0: r): the job's, or the site's policy.max_lora_rank when lower and accepted. */
export function siteLoraRank(policy: Pick<SitePolicy, 'max_lora_rank'>, job: { r: number; minSiteR?: number }): RankDecision {
  const max = policy.max_lora_rank;
  if (max === null || max >= job.r) return { ok: true, r: job.r };
  const min = job.minSiteR || job.r;
  if (max < min) {
    return {
      ok: false,
      code: 'FEDLORA_ERR_POLICY',
      reason: `the job trains LoRA rank ${job.r} and accepts sites down to rank ${min} (lora.min_site_r); this site trains at most rank ${max} (policy.max_lora_rank)`,
    };
  }
  return { ok: true, r: max };
}
