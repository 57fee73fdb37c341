// The release gate and the safety suite: `fedlora site adapter candidates|approve|rollback`,
// `fedlora eval safety`.
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { CliGroups } from '../groups.ts';
import { fail } from '../../shared/errors.ts';
import { withSiteDb } from './serve.ts';
import { adapterOption, deviceOption, siteDirOption } from '../engine-options.ts';

/** "v3", "3" or "job-x/v3" → job and version (the job may be left out when the site has one). */
export function parseVersion(text: string, job: string | undefined, jobs: string[]): { jobId: string; version: number } {
  const m = /^(?:(.+)\/)?v?(\d+)$/.exec(text.trim());
  if (!m) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `version ${JSON.stringify(text)}: expected v3, 3 or JOB/v3`);
  const jobId = m[1] ?? job ?? (jobs.length === 1 ? jobs[0] : undefined);
  if (!jobId) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `version ${text}: the site has candidates of ${jobs.length} jobs (${jobs.join(', ') || 'none'}); name one with --job or JOB/v${m[2]}`);
  return { jobId, version: Number(m[2]) };
}

export function register(g: CliGroups): void {
  const adapter = g.site.command('adapter').description("the release gate: which received global adapter the site's assistant serves");
  adapter
    .command('candidates')
    .description('global adapters received, their held-out metrics, safety results and gate status; * marks the one served')
    .addOption(siteDirOption())
    .option('--json', 'print JSON', false)
    .action(async (o: { siteDir: string; json: boolean }) => {
      const { listCandidates } = await import('../../site-agent/serve/gate/policy.ts');
      const { currentServing } = await import('../../site-agent/serve/gate/serving.ts');
      const { reviewOf, reviewLine } = await import('../../site-agent/serve/review/aggregates.ts');
      const { cands, serving, reviews } = await withSiteDb(o.siteDir, (db) => {
        const cands = listCandidates(db);
        const reviewed = new Set(db.prepare('SELECT DISTINCT adapter_label FROM review_cases').pluck().all() as string[]);
        return { cands, serving: currentServing(db), reviews: new Map(cands.filter((c) => reviewed.has(c.label)).map((c) => [c.label, reviewOf(db, c.label)])) };
      });
      if (o.json) {
        process.stdout.write(JSON.stringify({ serving, candidates: cands.map((c) => ({ ...c, review: reviews.get(c.label) ?? null })) }, null, 2) + '\n');
        return;
      }
      process.stdout.write(`serving: ${serving.label}${serving.sha256 ? ` (sha256 ${serving.sha256.slice(0, 12)}…)` : ''}\n`);
      for (const c of cands) {
        const metrics = c.metrics.filter((m) => ['accuracy', 'loss'].includes(m.name)).map((m) => `${m.name} ${m.value.toFixed(3)}`).join(', ');
        const failing = (c.checks ?? []).filter((x) => !x.ok).map((x) => `${x.name}: ${x.detail}`);
        const safety = (c.checks ?? []).find((x) => x.name === 'safety');
        process.stdout.write(`${c.label === serving.label ? '*' : ' '} ${c.label}\t${c.status}\tsha256 ${c.sha256.slice(0, 12)}…\t${metrics || 'no held-out metrics'}` +
          `${safety ? `\tsafety ${safety.detail}` : ''}${failing.length ? `\n    held by: ${failing.join('; ')}` : ''}\n`);
        const r = reviews.get(c.label);
        if (r) process.stdout.write(`    ${reviewLine(r)}\n`);
      }
    });
  adapter
    .command('approve')
    .description('serve a candidate that passed the automatic checks (with --override: one that did not; audited)')
    .argument('<version>', 'v3, 3 or JOB/v3')
    .option('--job <id>', 'the job, when the site has candidates of several')
    .option('--override', 'serve it even though a check fails (recorded in the audit log with the failing checks)', false)
    .option('--by <name>', 'who approves (recorded)', process.env.USER ?? 'admin')
    .addOption(siteDirOption())
    .action(async (text: string, o: { job?: string; override: boolean; by: string; siteDir: string }) => {
      const { approveCandidate, listCandidates } = await import('../../site-agent/serve/gate/policy.ts');
      const { loadSiteConfig } = await import('../../site-agent/config.ts');
      const { AuditLog } = await import('../../shared/audit.ts');
      const policy = loadSiteConfig(o.siteDir).serve.gate;
      const c = await withSiteDb(o.siteDir, (db) => {
        const v = parseVersion(text, o.job, [...new Set(listCandidates(db).map((x) => x.jobId))]);
        return approveCandidate(db, new AuditLog(db, 'site_audit'), policy, v.jobId, v.version, o.by, o.override);
      });
      process.stdout.write(`${c.label} approved by ${o.by}${o.override ? ' (override)' : ''}: the assistant serves it from its next answer\n`);
    });
  adapter
    .command('rollback')
    .description('serve again the version served before the current one (the base model if none)')
    .option('--by <name>', 'who rolls back (recorded)', process.env.USER ?? 'admin')
    .addOption(siteDirOption())
    .action(async (o: { by: string; siteDir: string }) => {
      const { rollback } = await import('../../site-agent/serve/gate/policy.ts');
      const { AuditLog } = await import('../../shared/audit.ts');
      const v = await withSiteDb(o.siteDir, (db) => rollback(db, new AuditLog(db, 'site_audit'), o.by));
      process.stdout.write(`rolled back: the assistant serves ${v.label === 'base' ? 'the base model' : v.label} from its next answer\n`);
    });

  g.eval
    .command('safety')
    .description('the safety red-team suite (216 prompts, Chinese and English, 6 categories, rule-based judges): pass rate per category with 95% Wilson intervals')
    .requiredOption('--model <dir>', 'base model folder')
    .addOption(adapterOption())
    .option('--site-dir <dir>', "use this site's assistant settings (instructions, disclaimer) and store the results for its release gate")
    .option('--max-new-tokens <n>', 'tokens generated per answer', '160')
    .option('--limit <n>', 'only the first N prompts of each category (a quick check; the gate needs the whole suite)')
    .addOption(deviceOption())
    .option('--json', 'print the report as JSON (total, per category, per prompt)', false)
    .action(async (o: { model: string; adapter?: string; siteDir?: string; maxNewTokens: string; limit?: string; device: string; json: boolean }) => {
      const maxNew = Number(o.maxNewTokens);
      if (!Number.isInteger(maxNew) || maxNew < 1) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--max-new-tokens ${JSON.stringify(o.maxNewTokens)}: expected a positive integer`);
      const limit = o.limit === undefined ? null : Number(o.limit);
      if (limit !== null && !(Number.isInteger(limit) && limit > 0)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--limit ${JSON.stringify(o.limit)}: expected a positive integer`);
      if (limit !== null && o.siteDir) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', '--limit runs are not stored for the gate (it needs the whole suite); leave out --site-dir or --limit');
      if (o.adapter && !existsSync(join(o.adapter, 'adapter_model.safetensors'))) throw fail('FEDLORA_ERR_ADAPTER', `--adapter ${o.adapter}: no adapter_model.safetensors there`);
      const { runSafetySuite, storeSafetyRun, loadSafetyPrompts } = await import('../../site-agent/eval/safety/suite.ts');
      const { createEngineBackend } = await import('../../site-agent/serve/backend/engine-backend.ts');
      const { ServeConfigSchema } = await import('../../site-agent/serve/config.ts');
      const { sha256FileSync } = await import('../../shared/hash.ts');
      const siteServe = o.siteDir ? (await import('../../site-agent/config.ts')).loadSiteConfig(o.siteDir).serve : null;
      const serveCfg = siteServe ?? ServeConfigSchema.parse({});
      const sha256 = o.adapter ? sha256FileSync(join(o.adapter, 'adapter_model.safetensors')) : null;
      const label = o.adapter ? resolve(o.adapter) : 'base';
      const backend = await createEngineBackend({ modelDir: o.model, device: o.device as 'cpu' });
      await backend.useVersion({ label, jobId: null, version: null, sha256, dir: o.adapter ? resolve(o.adapter) : null, seq: 0 });
      let prompts = loadSafetyPrompts().prompts;
      if (limit !== null) prompts = prompts.filter((p, _i, all) => all.filter((q) => q.category === p.category).indexOf(p) < limit);
      const report = await runSafetySuite({
        backend, config: serveCfg, adapter: { label, sha256 }, maxNewTokens: maxNew, prompts,
        onProgress: (d, n) => { if (!o.json && process.stderr.isTTY) process.stderr.write(`\r${d}/${n}`); },
      });
      await backend.close();
      let decided = '';
      if (o.siteDir) {
        // Stored for the gate; a candidate the run is about is decided again with it.
        const { listCandidates, decideCandidate } = await import('../../site-agent/serve/gate/policy.ts');
        const { AuditLog } = await import('../../shared/audit.ts');
        const policy = siteServe!.gate;
        decided = await withSiteDb(o.siteDir, (db) => {
          const c = listCandidates(db).find((x) => x.sha256 === sha256);
          storeSafetyRun(db, report, { jobId: c?.jobId ?? null, version: c?.version ?? null });
          if (!c || c.status === 'approved' || c.status === 'rejected') return '';
          const d = decideCandidate(db, new AuditLog(db, 'site_audit'), policy, c.jobId, c.version);
          const failing = (d.checks ?? []).filter((x) => !x.ok).map((x) => `${x.name}: ${x.detail}`);
          return `release gate: ${d.label} ${d.status}${failing.length ? ` (${failing.join('; ')})` : ''}\n`;
        });
      }
      if (o.json) {
        process.stdout.write(JSON.stringify({ total: { prompts: report.prompts, passed: report.passed, pass_rate: report.pass_rate, ci95: report.ci95 }, categories: report.categories, adapter: report.adapter, suite_sha256: report.suite_sha256, results: report.results }, null, 2) + '\n');
        return;
      }
      const pct = (x: number) => (100 * x).toFixed(1).padStart(5);
      process.stdout.write(`safety suite on ${label}${sha256 ? ` (sha256 ${sha256.slice(0, 12)}…)` : ''}: ${report.prompts} prompts\n`);
      process.stdout.write('category                     pass/n    rate   95% CI (Wilson)\n');
      for (const [cat, r] of Object.entries(report.categories)) {
        process.stdout.write(`${cat.padEnd(28)} ${`${r.passed}/${r.prompts}`.padStart(7)} ${pct(r.pass_rate)}%  [${pct(r.ci95[0])}%, ${pct(r.ci95[1])}%]\n`);
      }
      process.stdout.write(`${'total'.padEnd(28)} ${`${report.passed}/${report.prompts}`.padStart(7)} ${pct(report.pass_rate)}%  [${pct(report.ci95[0])}%, ${pct(report.ci95[1])}%]\n`);
      process.stdout.write(decided);
    });
}
