// Researchers' commands: `job metrics JOB` (rows, or per-round averages across sites with
// --summary; JSON or CSV) and `job cross-eval JOB` (request a cross-evaluation, or --show the
// {data site x model owner} matrix). They talk to the coordinator's HTTP API
// (coordinator/http/client.ts); --data-dir uses a local coordinator's URL and admin token.
import type { CliGroups } from '../groups.ts';
import { apiOptions, out } from '../api-options.ts';

export function register(g: CliGroups): void {
  apiOptions(g.job.command('metrics').argument('<job>', 'job id')
    .description('metrics the sites reported (global vs local-only, per site and round); --summary: averages across sites, unweighted and weighted by count')
    .option('--format <fmt>', 'json | csv', 'json')
    .option('--summary', 'per-round averages across sites instead of the rows')
    .option('--site <id>', 'only this site').option('--metric <name>', 'only this metric (loss, accuracy, ...)').option('--kind <kind>', 'global | local | base | cross'))
    .action(async (job: string, o) => {
      const { fail } = await import('../../shared/errors.ts');
      const { api, resolveTarget } = await import('../../coordinator/http/client.ts');
      const fmt = o.format as string;
      if (fmt !== 'json' && fmt !== 'csv') throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--format must be json or csv, got ${JSON.stringify(fmt)}`);
      const q = new URLSearchParams();
      for (const k of ['site', 'metric', 'kind'] as const) if (o[k]) q.set(k, o[k]);
      if (fmt === 'csv') q.set('format', 'csv');
      const path = `/api/jobs/${encodeURIComponent(job)}/metrics${o.summary ? '/summary' : ''}${q.size ? `?${q}` : ''}`;
      out(await api(resolveTarget(o), 'GET', path));
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
}
