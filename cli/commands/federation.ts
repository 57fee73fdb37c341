// Coordinator-side commands: `coordinator init|start`, `job submit|validate|status|list`,
// `adapter list|download`. (Site-side `site start|status` go in the marked section below.)
import type { CliGroups } from '../groups.ts';
import { apiOptions, out } from '../api-options.ts';
import { fail } from '../../shared/errors.ts';

export function register(g: CliGroups): void {
  // ---- coordinator ----------------------------------------------------------------------
  g.coordinator.command('init')
    .description('create coordinator.yaml, the consortium CA, the server certificate, the manifest key and an admin token')
    .requiredOption('--data-dir <dir>', 'coordinator data dir')
    .option('--san <names...>', 'extra DNS names / IPs for the server certificate')
    .option('--federation-port <n>', 'mutual-TLS listener port', '7443')
    .option('--enrollment-port <n>', 'enrollment listener port', '7444')
    .option('--http-port <n>', 'HTTP API port', '8080')
    .option('--public-endpoint <host:port>', 'Federation endpoint that sites dial')
    .option('--force', 'overwrite an existing data dir (invalidates all site certificates)')
    .option('--encrypt-db', 'encrypt coordinator.sqlite at rest (SQLCipher; key made 0600 in secrets/db.key)')
    .action(async (o) => {
      const { initCoordinator } = await import('../../coordinator/service.ts');
      const r = await initCoordinator({
        dataDir: o.dataDir, sans: o.san, force: !!o.force,
        config: {
          federation: { port: Number(o.federationPort), ...(o.publicEndpoint ? { public_endpoint: o.publicEndpoint } : {}) },
          enrollment: { port: Number(o.enrollmentPort) }, http: { port: Number(o.httpPort) },
          ...(o.encryptDb ? { database: { encryption: 'sqlcipher' } } : {}),
        },
      });
      out(`config: ${r.configPath}\nCA sha256: ${r.caSha256}\nadmin token (shown once; also in ${o.dataDir}/admin.token, mode 0600): ${r.adminToken}`);
    });

  g.coordinator.command('start')
    .description('run the coordinator (Federation mTLS + Enrollment + HTTP API) until SIGTERM/SIGINT')
    .requiredOption('--data-dir <dir>', 'coordinator data dir')
    .action(async (o) => {
      const { startCoordinator } = await import('../../coordinator/service.ts');
      // Signal handlers first: a SIGTERM that arrives while starting still stops cleanly.
      let stopRequested: string | null = null;
      let wake: (() => void) | null = null;
      const onSignal = (sig: string) => {
        stopRequested = sig;
        wake?.();
      };
      process.once('SIGTERM', () => onSignal('SIGTERM'));
      process.once('SIGINT', () => onSignal('SIGINT'));
      const c = await startCoordinator(o.dataDir);
      out(`federation (mTLS): ${c.federationEndpoint}\nenrollment (TLS): ${c.enrollmentEndpoint}\nhttp: ${c.httpUrl}`);
      if (!stopRequested) await new Promise<void>((resolve) => (wake = resolve));
      process.stderr.write(`coordinator: ${stopRequested}, stopping\n`);
      await c.stop();
    });

  // ---- jobs -----------------------------------------------------------------------------
  apiOptions(g.job.command('submit').argument('<file>', 'job spec (YAML or JSON)').description('validate and submit a job')
    .option('--id <id>', 'job id (default job-<random>): 1-64 of [a-z0-9._-], starting with a letter or digit; e.g. to run the same job in two federations'))
    .action(async (file: string, o) => {
      const { checkJobId } = await import('../../coordinator/jobs/job-id.ts');
      if (o.id !== undefined) checkJobId(o.id, '--id'); // refused before anything is read or sent
      const { loadJobSpecFile } = await import('../../coordinator/jobs/spec.ts');
      const { api, resolveTarget } = await import('../../coordinator/http/client.ts');
      const spec = loadJobSpecFile(file);
      const j = await api<{ id: string; status: string }>(resolveTarget(o), 'POST', `/api/jobs${o.id ? `?id=${encodeURIComponent(o.id)}` : ''}`, spec);
      out(`job ${j.id} ${j.status}`);
    });
  g.job.command('validate').argument('<file>', 'job spec (YAML or JSON)')
    .description('check a job file offline: its fields, its base model and its lineage (init_adapter); errors name the line and field')
    .option('--model <dir>', 'the base model folder: its manifest must be base_model.manifest_sha256')
    .option('--coordinator-dir <dir>', "the coordinator's data folder (read-only): checks init_adapter's version there")
    .option('--init-adapter <dir>', 'or a folder `fedlora adapter download` wrote for the init_adapter version')
    .action(async (file: string, o: { model?: string; coordinatorDir?: string; initAdapter?: string }) => {
      const { validateJobFile } = await import('../job-validate.ts');
      const checked = validateJobFile(file, o);
      out(`${file}: valid\n${checked.map((l) => `  ${l}`).join('\n')}`);
    });
  apiOptions(g.job.command('continue').argument('<job>').description("run K more rounds as a new data period: sites train their new records with a replay sample of earlier ones (train.replay_fraction); a completed job runs again")
    .requiredOption('--rounds <k>', 'how many rounds'))
    .action(async (job: string, o) => {
      const rounds = Number(o.rounds);
      if (!Number.isInteger(rounds) || rounds < 1) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--rounds: "${o.rounds}" is not a whole number of rounds (1 or more)`);
      const { api, resolveTarget } = await import('../../coordinator/http/client.ts');
      const j = await api<{ id: string; status: string; rounds_total: number; periods: { period: number; first_round: number; rounds: number }[] }>(resolveTarget(o), 'POST', `/api/jobs/${encodeURIComponent(job)}/continue`, { rounds });
      const p = j.periods.at(-1)!;
      out(`job ${j.id} ${j.status}: period ${p.period}, rounds ${p.first_round}-${p.first_round + p.rounds - 1} of ${j.rounds_total}`);
    });
  apiOptions(g.job.command('status').argument('<job>').description('job status with its rounds'))
    .action(async (job: string, o) => {
      const { api, resolveTarget } = await import('../../coordinator/http/client.ts');
      const t = resolveTarget(o);
      const j = await api<Record<string, unknown>>(t, 'GET', `/api/jobs/${encodeURIComponent(job)}`);
      const r = await api<{ rounds: unknown[] }>(t, 'GET', `/api/jobs/${encodeURIComponent(job)}/rounds`);
      const { spec: _spec, ...rest } = j;
      out({ ...rest, rounds: r.rounds });
    });
  apiOptions(g.job.command('list').description('list jobs'))
    .action(async (o) => {
      const { api, resolveTarget } = await import('../../coordinator/http/client.ts');
      const { jobs } = await api<{ jobs: { id: string; name: string; status: string; current_version: number; rounds_total: number }[] }>(resolveTarget(o), 'GET', '/api/jobs');
      out(jobs.map((j) => `${j.id}\t${j.status}\tv${j.current_version}/${j.rounds_total}\t${j.name}`).join('\n') || '(no jobs)');
    });

  // ---- adapters -------------------------------------------------------------------------
  apiOptions(g.adapter.command('list').description('published adapter versions of a job').requiredOption('--job <id>'))
    .action(async (o) => {
      const { api, resolveTarget } = await import('../../coordinator/http/client.ts');
      const { versions } = await api<{ versions: { version: number; round: number; sha256: string; size: number; created: string; manifest: { contributing_sites: number } }[] }>(resolveTarget(o), 'GET', `/api/jobs/${encodeURIComponent(o.job)}/adapters`);
      out(versions.map((v) => `v${v.version}\tround ${v.round}\t${v.manifest.contributing_sites} site(s)\t${v.sha256}\t${v.size} B\t${v.created}`).join('\n'));
    });
  apiOptions(g.adapter.command('download').description('download a version as a PEFT folder (signature and sha256 checked)')
    .requiredOption('--job <id>').requiredOption('--version <n>').requiredOption('--out <dir>'))
    .action(async (o) => {
      const { downloadAdapter, resolveTarget } = await import('../../coordinator/http/client.ts');
      const r = await downloadAdapter(resolveTarget(o), o.job, Number(o.version), o.out);
      out(`adapter ${r.sha256} (manifest signature verified)\n${r.files.join('\n')}`);
    });
}
