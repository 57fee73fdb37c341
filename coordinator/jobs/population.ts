// The eligible sites of a DP job with Poisson sampling (privacy.dp.sample_rate q < 1), fixed at
// submission (table job_population): N of the fixed denominator q x N, and the only sites the
// job's rounds sample. The accountant's guarantee needs N fixed for the whole job — a site
// enrolled mid-job is not in it, so it never changes N — and every sample taken whole: a job
// whose settings would cut a sample is refused here, naming the field.
import type { Database } from 'better-sqlite3-multiple-ciphers';
import { fail } from '../../shared/errors.ts';
import type { JobSpec } from './spec.ts';

/** The roster a job would have if submitted now (null: the job does not Poisson-sample).
 *  `active` = the enrolled sites that are active now. Throws FEDLORA_ERR_JOB_INVALID. */
export function populationFor(spec: JobSpec, active: readonly string[]): string[] | null {
  const dp = spec.privacy.dp;
  if (!dp || dp.sample_rate >= 1) return null;
  const q = dp.sample_rate;
  let sites = [...active].sort();
  if (dp.eligible_sites) {
    const known = new Set(active);
    dp.eligible_sites.forEach((s, i) => {
      if (!known.has(s)) throw fail('FEDLORA_ERR_JOB_INVALID', `privacy.dp.eligible_sites[${i}]: site ${JSON.stringify(s)} is not an enrolled, active site`);
    });
    sites = [...new Set(dp.eligible_sites)].sort();
  }
  if (sites.length === 0) throw fail('FEDLORA_ERR_JOB_INVALID', `privacy.dp.sample_rate: ${q} < 1 samples the enrolled sites, and none is enrolled and active yet; enroll the sites before submitting the job`);
  // A Poisson sample can be as large as N: a cap below N would cut some samples, and a cut sample
  // is not the subsampled Gaussian the accountant charges for.
  if (spec.max_sites < sites.length) {
    throw fail('FEDLORA_ERR_JOB_INVALID', `max_sites: ${spec.max_sites} is below N = ${sites.length} eligible sites; with privacy.dp.sample_rate ${q} < 1 a round may sample all of them (expected q x N = ${(q * sites.length).toFixed(2)}), so max_sites must be at least ${sites.length}`);
  }
  return sites;
}

export function recordPopulation(db: Database, jobId: string, sites: readonly string[]): void {
  const ins = db.prepare('INSERT INTO job_population (job_id, site_id) VALUES (?, ?)');
  for (const s of sites) ins.run(jobId, s);
}

/** The job's fixed roster, or null when it has none (no Poisson sampling). */
export function populationOf(db: Database, jobId: string): string[] | null {
  const rows = db.prepare('SELECT site_id FROM job_population WHERE job_id = ? ORDER BY site_id').all(jobId) as { site_id: string }[];
  return rows.length ? rows.map((r) => r.site_id) : null;
}
