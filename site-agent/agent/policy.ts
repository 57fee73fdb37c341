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
