// `fedlora site backup` and `fedlora site restore`: a consistent copy of site.sqlite while the
// agent runs (VACUUM INTO), encrypted with the same key as the live file, with a manifest that
// names the key by fingerprint only. The key is never written into a backup: keep it apart (the
// hospital's key manager, or a copy of secrets/db.key stored elsewhere). A restore opens the copy
// with the site's key (or the older key it was made with, --key-file), checks it, re-encrypts
// it with the site's current key when they differ, and only then puts it in place.
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fail } from '../shared/errors.ts';
import { backupCipherDb, openCopyWithKey, reencryptFile } from '../shared/sqlite-cipher.ts';
import { keyFingerprint, readKey, readKeyFile } from '../shared/db-key.ts';
import { sha256File } from '../shared/hash.ts';
import { openSiteDb, siteDbSpec } from './site-db.ts';

export interface BackupManifest {
  kind: 'fedlora-site-backup';
  created_at: string;
  site_dir: string;
  file: 'site.sqlite';
  sha256: string;
  bytes: number;
  schema_version: number;
  encryption: 'sqlcipher' | 'none';
  /** keyFingerprint of the key the copy is encrypted with (null: plain). */
  key_fingerprint: string | null;
  records: number;
}

const count = (db: import('better-sqlite3-multiple-ciphers').Database, table: string): number =>
  db.prepare("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?").pluck().get(table) ? (db.prepare(`SELECT count(*) FROM ${table}`).pluck().get() as number) : 0;

/** Write <outDir>/site.sqlite (encrypted as the live file) and <outDir>/backup.json. */
export async function backupSiteDb(siteDir: string, outDir: string): Promise<BackupManifest> {
  const spec = siteDbSpec(siteDir);
  if (!existsSync(spec.file)) throw fail('FEDLORA_ERR_NOT_FOUND', `${spec.file} does not exist: nothing to back up`);
  const out = resolve(outDir);
  mkdirSync(out, { recursive: true, mode: 0o700 });
  const dest = join(out, 'site.sqlite');
  const db = openSiteDb(siteDir, { readonly: true });
  let manifest: Omit<BackupManifest, 'sha256' | 'bytes'>;
  try {
    backupCipherDb(db, dest);
    manifest = {
      kind: 'fedlora-site-backup', created_at: new Date().toISOString(), site_dir: resolve(siteDir), file: 'site.sqlite',
      schema_version: db.pragma('user_version', { simple: true }) as number,
      encryption: spec.source ? 'sqlcipher' : 'none',
      key_fingerprint: spec.source ? keyFingerprint(readKey(spec.source)) : null,
      records: count(db, 'data_records'),
    };
  } finally {
    db.close();
  }
  const full: BackupManifest = { ...manifest, sha256: await sha256File(dest), bytes: statSync(dest).size };
  writeFileSync(join(out, 'backup.json'), JSON.stringify(full, null, 2) + '\n', { mode: 0o600 });
  return full;
}

export interface RestoreResult {
  records: number;
  schemaVersion: number;
  /** The copy was made with another key than the site's current one and was re-encrypted. */
  reencrypted: boolean;
  /** Where the database the restore replaced was moved (--force). */
  previous?: string;
}

/** Put a backup made by backupSiteDb in place of <siteDir>/site.sqlite. The agent and the
 *  assistant must be stopped. `keyFile`: the key the backup was made with, when it is not the
 *  site's current key (a backup from before a rekey). */
export async function restoreSiteDb(siteDir: string, fromDir: string, o: { keyFile?: string; force?: boolean } = {}): Promise<RestoreResult> {
  const spec = siteDbSpec(siteDir);
  const src = join(resolve(fromDir), 'site.sqlite');
  const manifestFile = join(resolve(fromDir), 'backup.json');
  if (!existsSync(src)) throw fail('FEDLORA_ERR_NOT_FOUND', `${src} does not exist: not a backup made by \`fedlora site backup\``);
  const manifest = existsSync(manifestFile) ? (JSON.parse(readFileSync(manifestFile, 'utf8')) as BackupManifest) : undefined;
  if (manifest && manifest.sha256 !== (await sha256File(src))) throw fail('FEDLORA_ERR_IO', `${src}: sha256 differs from ${manifestFile}: the copy is damaged`);
  if (!spec.source && manifest?.encryption === 'sqlcipher') {
    throw fail('FEDLORA_ERR_CONFIG', `${src} is encrypted but ${spec.configName} says database.encryption: none; restore into a site configured for sqlcipher`);
  }
  const siteKey = spec.source ? readKey(spec.source, { create: !existsSync(spec.file) }) : null;
  const backupKey = o.keyFile ? readKeyFile(resolve(o.keyFile), '--key-file') : manifest?.encryption === 'none' ? null : siteKey;
  const where = o.keyFile ? `key file ${resolve(o.keyFile)} (--key-file)` : 'site\'s current key';
  if (manifest?.key_fingerprint && backupKey && keyFingerprint(backupKey) !== manifest.key_fingerprint) {
    throw fail('FEDLORA_ERR_DB_KEY', `${src} was made with the key of fingerprint ${manifest.key_fingerprint}; the ${where} is ${keyFingerprint(backupKey)}. ` +
      'Give the key of that time with --key-file (a backup made before a rekey keeps its old key)');
  }
  const staging = `${spec.file}.restoring`;
  rmSync(staging, { force: true });
  const copy = openCopyWithKey(src, backupKey, where);
  try {
    copy.prepare('VACUUM INTO ?').run(staging);
  } finally {
    copy.close();
  }
  const reencrypted = siteKey !== null && backupKey !== siteKey;
  if (reencrypted) reencryptFile(staging, backupKey, siteKey!);
  let previous: string | undefined;
  if (existsSync(spec.file)) {
    if (!o.force) {
      rmSync(staging, { force: true });
      throw fail('FEDLORA_ERR_IO', `${spec.file} exists: stop the agent and the assistant, then restore with --force (the current file is kept as site.sqlite.before-restore-<time>)`);
    }
    previous = `${spec.file}.before-restore-${new Date().toISOString().replace(/[:.]/g, '-')}`;
    renameSync(spec.file, previous);
    for (const s of ['-wal', '-shm']) if (existsSync(spec.file + s)) renameSync(spec.file + s, previous + s);
  }
  renameSync(staging, spec.file);
  const db = openSiteDb(siteDir);
  try {
    return { records: count(db, 'data_records'), schemaVersion: db.pragma('user_version', { simple: true }) as number, reencrypted, previous };
  } finally {
    db.close();
  }
}
