// Researchers' commands: `job metrics JOB` (rows, or per-round consortium figures with
// --summary; JSON, CSV or a table with the 95% intervals) and `job cross-eval JOB` (request a cross-evaluation, or --show the
// {data site x model owner} matrix). They talk to the coordinator's HTTP API
// (coordinator/http/client.ts); --data-dir uses a local coordinator's URL and admin token.
import type { CliGroups } from '../groups.ts';
import { apiOptions, out } from '../api-options.ts';

export function register(g: CliGroups): void {
  apiOptions(g.job.command('metrics').argument('<job>', 'job id')
    .description('metrics the sites reported (global vs local-only, per site and round) with their 95% intervals; --summary: consortium figures (averages across sites, weighted by count, with a pooled 95% interval)')
    .option('--format <fmt>', 'json | csv | table', 'json')
    .option('--summary', 'per-round consortium figures instead of the per-site rows')
    .option('--site <id>', 'only this site').option('--metric <name>', 'only this metric (loss, accuracy, recall, ...)').option('--kind <kind>', 'global | local | base | cross')
    .option('--subset <s>', "only this subset: '' the whole set, 'diagnosis=X', 'sex=F', 'age_band=40-59', 'subject=S'")
    .option('--eval-set <s>', "only this evaluation set: '' the held-out sets, 'exam:<name>'"))
    .action(async (job: string, o) => {
      const { fail } = await import('../../shared/errors.ts');
      const { api, resolveTarget } = await import('../../coordinator/http/client.ts');
      const fmt = o.format as string;
      if (!['json', 'csv', 'table'].includes(fmt)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--format must be json, csv or table, got ${JSON.stringify(fmt)}`);
      const q = new URLSearchParams();
      for (const k of ['site', 'metric', 'kind'] as const) if (o[k]) q.set(k, o[k]);
      if (o.subset !== undefined) q.set('subset', o.subset);
      if (o.evalSet !== undefined) q.set('eval_set', o.evalSet);
      if (fmt === 'csv') q.set('format', 'csv');
      const path = `/api/jobs/${encodeURIComponent(job)}/metrics${o.summary ? '/summary' : ''}${q.size ? `?${q}` : ''}`;
      const got = await api(resolveTarget(o), 'GET', path);
      if (fmt !== 'table') {
        out(got);
        return;
      }
      const { siteTable, summaryTable } = await import('../metrics-table.ts');
      out(o.summary ? summaryTable((got as { summary: Parameters<typeof summaryTable>[0] }).summary) : siteTable((got as { metrics: Parameters<typeof siteTable>[0] }).metrics));
    });

  apiOptions(g.job.command('cross-eval').argument('<job>', 'job id')
    .description('request a cross-evaluation (each consenting site evaluates the others\' local-only adapters on its held-out data); --show prints the matrix instead')
    .option('--sites <ids...>', 'only these sites (default: all consenting sites)')
    .option('--show', 'print the current cross-evaluation matrix (no request)')
    .option('--metric <name>', 'with --show: the metric (default accuracy, else loss)')
    .option('--format <fmt>', 'with --show: json | csv', 'json'))
    .action(async (job: string, o) => {
      const { api, resolveTarget } = await import('../../coordinator/http/client.ts');
      const t = resolveTarget(o);
      const J = `/api/jobs/${encodeURIComponent(job)}/cross-eval`;
      if (o.show) {
        const q = new URLSearchParams();
        if (o.metric) q.set('metric', o.metric);
        if (o.format === 'csv') q.set('format', 'csv');
        out(await api(t, 'GET', `${J}${q.size ? `?${q}` : ''}`));
        return;
      }
      const r = await api<{ id: number; status: string }>(t, 'POST', J, o.sites ? { sites: o.sites } : {});
      out(`cross-evaluation request #${r.id} for job ${job}: ${r.status}\n(results appear in \`fedlora job cross-eval ${job} --show\` and on the dashboard as sites report them)`);
    });

  apiOptions(g.job.command('exam').argument('<job>', 'job id')
    .description("ask the job's sites to score its newest global adapter on their own copy of an exam (site.yaml evaluation.exams); only figures come back; --show lists the exam tasks")
    .option('--exam <name>', "the exam's name, as the sites' evaluation.exams name their files")
    .option('--mode <m>', 'loglik | generate | both', 'loglik')
    .option('--sites <ids...>', 'only these sites (default: every site of the job)')
    .option('--show', 'list the exam tasks and their status (no request)'))
    .action(async (job: string, o) => {
      const { fail } = await import('../../shared/errors.ts');
      const { api, resolveTarget } = await import('../../coordinator/http/client.ts');
      const t = resolveTarget(o);
      const J = `/api/jobs/${encodeURIComponent(job)}/exams`;
      if (o.show) {
        out(await api(t, 'GET', J));
        return;
      }
      if (!o.exam) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', '--exam NAME is needed (or --show)');
      const r = await api<{ version: number; tasks: { site: string }[] }>(t, 'POST', J, { exam: o.exam, mode: o.mode, ...(o.sites ? { sites: o.sites } : {}) });
      out(`exam ${o.exam} of job ${job} v${r.version} sent to ${r.tasks.map((x) => x.site).join(', ')}\n(results: \`fedlora job metrics ${job} --eval-set exam:${o.exam} --summary --format table\`; status: \`fedlora job exam ${job} --show\`)`);
    });
}
