// Doctors' review of a candidate adapter: `fedlora site review sample` (the candidate answers a
// sample of held-out cases for the /review page) and `fedlora site review report` (per version:
// proportions with 95% Wilson intervals, mean score, unsafe rate, Cohen's kappa between doctors).
import type { CliGroups } from '../groups.ts';
import { fail } from '../../shared/errors.ts';
import { withSiteDb } from './serve.ts';
import { parseVersion } from './gate.ts';
import { siteDirOption } from '../engine-options.ts';

/** The candidate to review: the named version, else the newest one awaiting approval. */
async function candidateOf(siteDir: string, text: string | undefined) {
  const { listCandidates } = await import('../../site-agent/serve/gate/policy.ts');
  return withSiteDb(siteDir, (db) => {
    const all = listCandidates(db).filter((c) => c.version > 0);
    if (text) {
      const v = parseVersion(text, undefined, [...new Set(all.map((c) => c.jobId))]);
      const found = all.find((c) => c.jobId === v.jobId && c.version === v.version);
      if (!found) throw fail('FEDLORA_ERR_NOT_FOUND', `--version ${text}: no such candidate at this site (see \`fedlora site adapter candidates\`)`);
      return found;
    }
    const waiting = all.filter((c) => c.status !== 'approved' && c.status !== 'rejected');
    if (!waiting.length) throw fail('FEDLORA_ERR_NOT_FOUND', 'no candidate adapter awaiting approval at this site; name a version with --version JOB/vN');
    return waiting.sort((a, b) => (a.receivedAt < b.receivedAt ? -1 : a.receivedAt > b.receivedAt ? 1 : a.version - b.version)).at(-1)!;
  });
}

export function register(g: CliGroups): void {
  const review = g.site.command('review').description("doctors' review of a candidate adapter's answers (the /review page)");
  review
    .command('sample')
    .description('the candidate adapter answers a sample of held-out cases for the doctors to rate (adds only what is missing)')
    .option('--version <v>', 'the candidate (v3, 3 or JOB/v3); default: the newest awaiting approval')
    .option('--size <n>', 'cases (default serve.review.sample_size)')
    .addOption(siteDirOption())
    .action(async (o: { version?: string; size?: string; siteDir: string }) => {
      const { loadSiteConfig } = await import('../../site-agent/config.ts');
      const { openSiteDb } = await import('../../site-agent/site-db.ts');
      const { createEngineBackend } = await import('../../site-agent/serve/backend/engine-backend.ts');
      const { sampleReviewCases, siteSampleDeps } = await import('../../site-agent/serve/review/sample.ts');
      const site = loadSiteConfig(o.siteDir);
      const cfg = site.serve.review;
      const size = o.size === undefined ? cfg.sample_size : Number(o.size);
      if (!Number.isInteger(size) || size < 1) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--size ${JSON.stringify(o.size)}: expected a positive integer`);
      const c = await candidateOf(o.siteDir, o.version);
      const backend = await createEngineBackend({ modelDir: site.model.path, device: site.model.device });
      const db = openSiteDb(o.siteDir);
      try {
        const r = await sampleReviewCases(
          siteSampleDeps(o.siteDir, site, db, backend),
          {
            adapter: { label: c.label, jobId: c.jobId, version: c.version, sha256: c.sha256, dir: c.dir, seq: 0 }, size, doubleFraction: cfg.double_review_fraction, maxNewTokens: cfg.max_new_tokens,
            onProgress: (d, n) => { if (process.stderr.isTTY) process.stderr.write(`\r${d}/${n}`); },
          },
        );
        process.stdout.write(`${c.label}: ${r.added} answers generated; ${r.cases} cases for review (of ${r.heldOut} held-out records; ${Math.round(100 * cfg.double_review_fraction)}% rated by two doctors)${r.tooLong ? `; ${r.tooLong} left out: longer than serve.max_prompt_tokens` : ''}; doctors rate them at /review\n`);
      } finally {
        db.close();
        await backend.close();
      }
    });
  review
    .command('report')
    .description("per candidate version: correct/partly/wrong and unsafe with 95% Wilson intervals, mean score, Cohen's kappa between doctors, and what is sent to the coordinator")
    .addOption(siteDirOption())
    .option('--json', 'print JSON', false)
    .action(async (o: { siteDir: string; json: boolean }) => {
      const { loadSiteConfig } = await import('../../site-agent/config.ts');
      const { reviewReport, formatReview, reviewMetrics } = await import('../../site-agent/serve/review/aggregates.ts');
      const minItems = loadSiteConfig(o.siteDir).evaluation.min_items;
      const rep = await withSiteDb(o.siteDir, (db) => reviewReport(db));
      if (o.json) {
        process.stdout.write(JSON.stringify(rep.map((r) => ({ ...r, sent: reviewMetrics(r, minItems).map((m) => ({ name: m.name, value: m.value, count: m.count })) })), null, 2) + '\n');
        return;
      }
      process.stdout.write((rep.length ? rep.map((r) => formatReview(r, minItems)).join('\n') : "no review cases yet: `fedlora site review sample` makes them") + '\n');
    });
}
