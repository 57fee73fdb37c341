// The databases at rest: `fedlora site rekey|backup|restore` and `fedlora coordinator rekey`
// (encryption: shared/sqlite-cipher.ts; the key sources: shared/db-key.ts).
import type { CliGroups } from '../groups.ts';
import { fail } from '../../shared/errors.ts';
import { defaultDataDir } from './pki.ts';
import { siteDirOption } from '../engine-options.ts';

/** --new-key-env NAME: the new key from that variable (sites whose key comes from key_env/key_command). */
function newKeyFromEnv(name: string | undefined): string | undefined {
  if (name === undefined) return undefined;
  const v = process.env[name];
  if (!v || !v.trim()) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--new-key-env ${name}: the variable is not set`);
  return v;
}

export function register(g: CliGroups): void {
  g.site
    .command('rekey')
    .description('encrypt site.sqlite with a new key (or encrypt a site database made before encryption at rest); stop the agent and the assistant first')
    .addOption(siteDirOption())
    .option('--new-key-env <name>', 'the new key from this environment variable (needed when the key comes from database.key_env or key_command)')
    .action(async (o: { siteDir: string; newKeyEnv?: string }) => {
      const { siteDbSpec } = await import('../../site-agent/site-db.ts');
      const { rekeyCipherDb } = await import('../../shared/sqlite-cipher.ts');
      const r = rekeyCipherDb(siteDbSpec(o.siteDir), { newKey: newKeyFromEnv(o.newKeyEnv) });
      process.stdout.write(`${r.from === 'plain' ? 'encrypted' : 'rekeyed'} ${siteDbSpec(o.siteDir).file}; the key is in the ${r.keyAt}\n`);
      process.stdout.write('backups made before this need the previous key to restore (fedlora site restore --key-file)\n');
    });

  g.site
    .command('backup')
    .description('a consistent copy of site.sqlite (safe while the agent runs), encrypted with the same key, with backup.json')
    .addOption(siteDirOption())
    .requiredOption('--out <dir>', 'backup folder (site.sqlite and backup.json are written there; never overwritten)')
    .action(async (o: { siteDir: string; out: string }) => {
      const { backupSiteDb } = await import('../../site-agent/site-backup.ts');
      const m = await backupSiteDb(o.siteDir, o.out);
      process.stdout.write(`backup ${o.out}/site.sqlite: ${m.bytes} bytes, ${m.records} records, schema ${m.schema_version}, ` +
        `${m.encryption === 'sqlcipher' ? `encrypted (key fingerprint ${m.key_fingerprint})` : 'NOT encrypted (database.encryption: none)'}\n`);
      if (m.encryption === 'sqlcipher') process.stdout.write('the key is not in the backup: keep the site\'s key (database.key_file / key manager) apart from it\n');
    });

  g.site
    .command('restore')
    .description('put a backup made by `fedlora site backup` in place of site.sqlite (stop the agent and the assistant first)')
    .addOption(siteDirOption())
    .requiredOption('--from <dir>', 'backup folder')
    .option('--key-file <file>', 'the key the backup was made with, when it is not the site\'s current key (a backup from before a rekey)')
    .option('--force', 'replace an existing site.sqlite (kept as site.sqlite.before-restore-<time>)', false)
    .action(async (o: { siteDir: string; from: string; keyFile?: string; force: boolean }) => {
      const { restoreSiteDb } = await import('../../site-agent/site-backup.ts');
      const r = await restoreSiteDb(o.siteDir, o.from, { keyFile: o.keyFile, force: o.force });
      process.stdout.write(`restored: ${r.records} records, schema ${r.schemaVersion}${r.reencrypted ? ', re-encrypted with the site\'s current key' : ''}` +
        `${r.previous ? `; the replaced file is ${r.previous}` : ''}\n`);
    });

  g.coordinator
    .command('rekey')
    .description('encrypt coordinator.sqlite with a new key, or encrypt a plain one (set database.encryption: sqlcipher in coordinator.yaml first); stop the coordinator first')
    .option('--data-dir <dir>', 'coordinator data dir', defaultDataDir())
    .option('--new-key-env <name>', 'the new key from this environment variable (needed when the key comes from database.key_env or key_command)')
    .action(async (o: { dataDir: string; newKeyEnv?: string }) => {
      const { coordinatorDbSpec } = await import('../../coordinator/store/migrations.ts');
      const { sqlitePathOf } = await import('../../coordinator/enrollment.ts');
      const { rekeyCipherDb } = await import('../../shared/sqlite-cipher.ts');
      const spec = coordinatorDbSpec(sqlitePathOf(o.dataDir));
      const r = rekeyCipherDb(spec, { newKey: newKeyFromEnv(o.newKeyEnv) });
      process.stdout.write(`${r.from === 'plain' ? 'encrypted' : 'rekeyed'} ${spec.file}; the key is in the ${r.keyAt}\n`);
    });
}
