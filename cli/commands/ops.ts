// Operations commands: `fedlora doctor` (this file's registerDoctor). Other operations
// commands (e.g. `audit verify`) register from `register` beside it.
import type { CliGroups } from '../groups.ts';
import { fail } from '../../shared/errors.ts';

export function register(g: CliGroups): void {
  registerDoctor(g);
}

export function registerDoctor(g: CliGroups): void {
  g.program
    .command('doctor')
    .description('check a site dir or a coordinator data dir: certificate, reachability, clock, model files, execution providers, disk (exit 1 on any FAIL)')
    .option('--site-dir <dir>', 'a site dir (site.yaml + enrollment files)')
    .option('--data-dir <dir>', 'a coordinator data dir')
    .option('--coordinator-url <url>', "site: the coordinator's HTTP API, for the clock check and the running jobs' base model (default $FEDLORA_COORDINATOR_URL)")
    .option('--model-sha256 <hex>', "site: the job's base model manifest sha256 to compare the local model with")
    .option('--skip-model-hash', 'site: do not hash the model files')
    .option('--timeout-ms <n>', 'timeout of each network probe', '5000')
    .option('--json', 'print the report as JSON')
    .action(async (o: { siteDir?: string; dataDir?: string; coordinatorUrl?: string; modelSha256?: string; skipModelHash?: boolean; timeoutMs: string; json?: boolean }) => {
      if (!!o.siteDir === !!o.dataDir) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', 'doctor: pass exactly one of --site-dir DIR (a site) or --data-dir DIR (the coordinator)');
      const timeoutMs = Number(o.timeoutMs);
      if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--timeout-ms must be a positive integer, got ${o.timeoutMs}`);
      if (o.modelSha256 && !/^[0-9a-f]{64}$/.test(o.modelSha256)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--model-sha256 must be 64 lowercase hex characters, got ${o.modelSha256}`);
      const { runSiteDoctor, runCoordinatorDoctor, formatDoctorReport } = await import('../doctor/index.ts');
      const r = o.siteDir
        ? await runSiteDoctor({ siteDir: o.siteDir, coordinatorUrl: o.coordinatorUrl ?? process.env.FEDLORA_COORDINATOR_URL, modelSha256: o.modelSha256, skipModelHash: o.skipModelHash, timeoutMs })
        : await runCoordinatorDoctor({ dataDir: o.dataDir!, timeoutMs });
      process.stdout.write((o.json ? JSON.stringify(r, null, 2) : formatDoctorReport(r)) + '\n');
      if (!r.ok) process.exitCode = 1;
    });
}
