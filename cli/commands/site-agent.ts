// Site agent commands: `fedlora site init|start|status`.
import { writeFileSync, existsSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import YAML from 'yaml';
import type { CliGroups } from '../groups.ts';
import { fail } from '../../shared/errors.ts';
import { parseSiteConfig } from '../../site-agent/config.ts';
import { deviceOption, siteDirOption } from '../engine-options.ts';

export function register(g: CliGroups): void {
  g.site
    .command('init')
    .description('write a site.yaml with the defaults (model folder, privacy policy) to edit')
    .requiredOption('--model <dir>', 'local folder of the base model (config.json, safetensors, tokenizer files)')
    .addOption(siteDirOption())
    .addOption(deviceOption())
    .option('--max-epsilon <e>', "largest job epsilon this site accepts (policy.max_epsilon)")
    .option('--min-sites <n>', 'refuse rounds that aggregate fewer sites (policy.min_sites_per_aggregation)', '2')
    .option('--http-port <n>', 'serve the local admin page and /metrics on 127.0.0.1:PORT')
    .option('--force', 'overwrite an existing site.yaml', false)
    .action((o: { model: string; siteDir: string; device: string; maxEpsilon?: string; minSites: string; httpPort?: string; force: boolean }) => {
      mkdirSync(o.siteDir, { recursive: true, mode: 0o700 });
      const file = join(o.siteDir, 'site.yaml');
      if (existsSync(file) && !o.force) throw fail('FEDLORA_ERR_CONFIG', `${file} exists; pass --force to overwrite`);
      const raw = {
        model: { path: resolve(o.model), device: o.device },
        policy: {
          max_epsilon: o.maxEpsilon === undefined ? null : Number(o.maxEpsilon),
          min_sites_per_aggregation: Number(o.minSites),
          require_dp: false,
          require_secure_aggregation: false,
          allow_cross_eval: false,
        },
        http: { host: '127.0.0.1', port: o.httpPort === undefined ? null : Number(o.httpPort) },
        // site.sqlite encrypted at rest; key_env: NAME or key_command: [argv] take the key from a key manager instead.
        database: { encryption: 'sqlcipher', key_file: 'secrets/db.key' },
      };
      parseSiteConfig(raw, `${file} (from the options)`);
      writeFileSync(file, '# fedlora site agent config — see deploy/README.md for every field\n' + YAML.stringify(raw));
      process.stdout.write(`wrote ${file}\n`);
    });

  g.site
    .command('start')
    .description('run the site agent: connect to the coordinator (outbound only) and take tasks')
    .addOption(siteDirOption('site dir (enrolled, with site.yaml)'))
    .option('--endpoint <host:port>', 'override the federation endpoint recorded at enrollment')
    .action(async (o: { siteDir: string; endpoint?: string }) => {
      const { startSiteAgent } = await import('../../site-agent/agent/run.ts');
      const running = await startSiteAgent(o.siteDir, { endpoint: o.endpoint });
      process.stdout.write(`site agent ${running.siteId} running${running.httpPort ? ` — local page http://127.0.0.1:${running.httpPort}/` : ''}\n`);
      await new Promise<void>((done) => {
        const stop = () => {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          running.stop().then(done, done);
        };
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);
      });
      const { releaseInferenceSessions } = await import('../../site-agent/engine/index.ts');
      await releaseInferenceSessions();
      process.stdout.write('site agent stopped\n');
      process.exit(0);
    });

  g.site
    .command('status')
    .description('enrollment, dataset and recent activity of this site (no connection needed)')
    .addOption(siteDirOption())
    .option('--json', 'print JSON', false)
    .action(async (o: { siteDir: string; json: boolean }) => {
      const { siteStatusSummary } = await import('../../site-agent/agent/run.ts');
      const s = siteStatusSummary(o.siteDir);
      if (o.json) process.stdout.write(JSON.stringify(s, null, 2) + '\n');
      else {
        for (const [k, v] of Object.entries(s)) {
          if (Array.isArray(v)) {
            process.stdout.write(`${k}:\n`);
            for (const row of v) process.stdout.write(`  ${JSON.stringify(row)}\n`);
          } else process.stdout.write(`${k}: ${v}\n`);
        }
      }
    });
}
