// The privacy ledger of one DP job: epsilon spent after each round (RDP composes additively, so
// the per-step RDP curve is computed once and scaled), and whether running one more round
// would exceed the job's epsilon budget. The coordinator asks `wouldExceedBudget(round)` before
// it opens a round and refuses with FEDLORA_ERR_PRIVACY_BUDGET.
import { fail } from '../../shared/errors.ts';
import { DEFAULT_RDP_ORDERS, rdpSubsampledGaussian, rdpToEpsilon } from './rdp.ts';

/** The job's privacy.dp section (coordinator/jobs/spec.ts), snake_case as in the spec. */
export interface DpSettings {
  noise_multiplier: number;
  sample_rate: number;
  delta: number;
  epsilon_budget: number;
}

export interface LedgerEntry {
  round: number;
  epsilon: number;
  order: number;
}

export interface PrivacyLedger {
  /** Epsilon after `rounds` rounds (0 rounds -> 0). */
  epsilonAfter(rounds: number): { epsilon: number; order: number };
  /** Epsilon after each of rounds 1..roundsSoFar. */
  history(roundsSoFar: number): LedgerEntry[];
  /** True when completing round `nextRound` (1-based) would push epsilon over the budget. */
  wouldExceedBudget(nextRound: number): boolean;
  /** Throws FEDLORA_ERR_PRIVACY_BUDGET when `wouldExceedBudget(nextRound)`. */
  assertWithinBudget(nextRound: number): void;
  /** The last round that stays within budget (0 if none). */
  maxRounds(limit?: number): number;
}

export function createPrivacyLedger(dp: DpSettings, orders: readonly number[] = DEFAULT_RDP_ORDERS): PrivacyLedger {
  if (!(dp.noise_multiplier >= 0)) throw fail('FEDLORA_ERR_CONFIG', `privacy.dp.noise_multiplier must be >= 0, got ${dp.noise_multiplier}`);
  if (!(dp.sample_rate > 0 && dp.sample_rate <= 1)) throw fail('FEDLORA_ERR_CONFIG', `privacy.dp.sample_rate must be in (0, 1], got ${dp.sample_rate}`);
  if (!(dp.delta > 0 && dp.delta < 1)) throw fail('FEDLORA_ERR_CONFIG', `privacy.dp.delta must be in (0, 1), got ${dp.delta}`);
  if (!(dp.epsilon_budget > 0)) throw fail('FEDLORA_ERR_CONFIG', `privacy.dp.epsilon_budget must be > 0, got ${dp.epsilon_budget}`);
  const perStep = orders.map((a) => rdpSubsampledGaussian(dp.sample_rate, dp.noise_multiplier, a));
  const epsilonAfter = (rounds: number) => {
    if (!(Number.isInteger(rounds) && rounds >= 0)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `rounds must be an integer >= 0, got ${rounds}`);
    if (rounds === 0) return { epsilon: 0, order: orders[0] };
    return rdpToEpsilon(orders, perStep.map((r) => r * rounds), dp.delta);
  };
  const wouldExceedBudget = (nextRound: number) => epsilonAfter(nextRound).epsilon > dp.epsilon_budget;
  return {
    epsilonAfter,
    history: (n) => Array.from({ length: n }, (_, k) => ({ round: k + 1, ...epsilonAfter(k + 1) })),
    wouldExceedBudget,
    assertWithinBudget(nextRound) {
      if (wouldExceedBudget(nextRound)) {
        const e = epsilonAfter(nextRound).epsilon;
        throw fail('FEDLORA_ERR_PRIVACY_BUDGET', `round ${nextRound} would raise epsilon to ${e.toFixed(4)} > privacy.dp.epsilon_budget ${dp.epsilon_budget} (delta ${dp.delta})`);
      }
    },
    maxRounds(limit = 1_000_000) {
      if (wouldExceedBudget(1)) return 0;
      let lo = 1; // within budget
      let hi = 2;
      while (hi <= limit && !wouldExceedBudget(hi)) {
        lo = hi;
        hi *= 2;
      }
      if (hi > limit) hi = limit + 1;
      while (hi - lo > 1) {
        const mid = Math.floor((lo + hi) / 2);
        if (wouldExceedBudget(mid)) hi = mid;
        else lo = mid;
      }
      return lo;
    },
  };
}
