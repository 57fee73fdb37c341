// The privacy audit's table: one row per canary, its exposure on the base model and on the
// global adapter without and with DP, then the means beside the ε the DP run's ledger claims.
import type { AuditReport } from './run-audit.ts';

export function printAudit(rep: AuditReport, log: (line: string) => void): void {
  const f = (x: number, d = 2) => x.toFixed(d).padStart(6);
  const by = (arm: string) => rep.arms.find((a) => a.arm === arm)!;
  const [base, noDp, dp] = [by('base'), by('no_dp'), by('dp')];
  const e = base.exposure;
  log('');
  log(`canary format "${rep.format}": ${e.candidate_space} candidates, ${e.method === 'exhaustive' ? 'every one scored (exact rank)' : `rank estimated from ${e.candidates_scored} sampled candidates (exposures above ~${Math.log2(e.candidates_scored).toFixed(1)} bits are at the sampling's resolution, marked *)`}`);
  log(`exposure = log2(${e.candidate_space}) - log2(rank) bits: ${Math.log2(e.candidate_space).toFixed(2)} = ranked first, ~1.44 on average for a canary the model never saw`);
  log(['canary'.padEnd(Math.max(6, ...rep.canaries.map((c) => c.text.length))), 'copies', '  base', ' no DP', '    DP'].join(' | '));
  rep.canaries.forEach((c, i) => {
    const cell = (a: typeof base) => f(a.exposure.canaries[i].exposure) + (a.exposure.canaries[i].at_resolution_limit ? '*' : '');
    log([c.text.padEnd(Math.max(6, ...rep.canaries.map((x) => x.text.length))), String(c.copies_in_training).padStart(6), cell(base), cell(noDp), cell(dp)].join(' | '));
  });
  log(`mean exposure: base ${base.exposure.mean_exposure.toFixed(2)}, no DP ${noDp.exposure.mean_exposure.toFixed(2)}, DP ${dp.exposure.mean_exposure.toFixed(2)} bits`);
  if (rep.held_out.length > 0) {
    log(`mean exposure of ${rep.held_out.length} held-out canaries (never planted: what chance gives): base ${base.held_out_exposure.mean_exposure.toFixed(2)}, no DP ${noDp.held_out_exposure.mean_exposure.toFixed(2)}, DP ${dp.held_out_exposure.mean_exposure.toFixed(2)} bits`);
  }
  log(`DP run: clip ${rep.dp.clip_norm}, noise multiplier ${rep.dp.noise_multiplier}, sample rate ${rep.dp.sample_rate}, ${rep.federation.rounds} rounds: ledger epsilon ${dp.epsilon === null ? '?' : dp.epsilon.toPrecision(4)} at delta ${rep.dp.delta}`);
  log('');
}
