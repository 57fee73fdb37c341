// How a strategy chooses the sites of a round (Strategy.configureRound):
//  - without DP sampling: a seeded shuffle of the online candidates, the first max_sites of it
//    (the seed is public: the job's selection_seed with the round and attempt);
//  - DP with sample rate q < 1: Poisson sampling, every eligible site independently with
//    probability q, drawn from the coordinator's secret per-round key (privacy/noise-key.ts), so
//    the sample is the one the RDP accountant charges for and no site can predict or steer it.
import { fail } from '../../shared/errors.ts';
import { keystream } from '../privacy/gaussian.ts';
import type { Candidate, RoundConfig, RoundInfo, Strategy } from './types.ts';

export type SiteSelector = (round: RoundInfo, candidates: readonly Candidate[]) => string[];

/** Deterministic selection: a seeded Fisher-Yates shuffle of the sorted candidates, first n, sorted. */
export function seededSelect(candidates: readonly string[], n: number, seed: number): string[] {
  const a = [...candidates].sort();
  let s = seed >>> 0 || 1;
  const rnd = () => ((s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0) / 4294967296);
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a.slice(0, n).sort();
}

const onlineIds = (candidates: readonly Candidate[]) => candidates.filter((c) => c.online).map((c) => c.siteId);

/** Every online candidate (a strategy used on its own, e.g. in tests). */
export const everyOnline: SiteSelector = (_round, candidates) => onlineIds(candidates).sort();

/** At most `maxSites` of the online candidates, by the round's public seed. */
export function seededOnlineSubset(maxSites: number): SiteSelector {
  return (round, candidates) => {
    const online = onlineIds(candidates);
    return seededSelect(online, Math.min(maxSites, online.length), round.seed);
  };
}

/** Poisson sampling: each site is taken independently with probability q, from a keystream of
 *  `key` (the same key gives the same sample; undefined = fresh randomness). Sites are sorted
 *  first so the result does not depend on listing order. */
export function poissonSample(sites: readonly string[], q: number, key?: Buffer | number): string[] {
  if (!(q > 0 && q <= 1)) throw fail('FEDLORA_ERR_CONFIG', `privacy.dp.sample_rate must be in (0, 1], got ${q}`);
  const sorted = [...sites].sort();
  const bytes = keystream(key, 'poisson-site-selection').bytes(8 * sorted.length);
  return sorted.filter((_, k) => {
    const u = (bytes.readUInt32LE(8 * k) * 2 ** 21 + (bytes.readUInt32LE(8 * k + 4) >>> 11)) / 2 ** 53;
    return u < q;
  });
}

/** configureRound of a strategy whose tasks carry the same settings every round. */
export function fixedRoundConfig(config: RoundConfig, select: SiteSelector = everyOnline): Strategy['configureRound'] {
  return (round, candidates) => ({ sites: select(round, candidates), config: { ...config } });
}
