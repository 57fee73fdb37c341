// Encryption at rest for the project's SQLite files (site.sqlite always by default,
// coordinator.sqlite as an option), through better-sqlite3-multiple-ciphers (SQLite3 Multiple
// Ciphers) with PRAGMA cipher='sqlcipher', legacy=4: the SQLCipher 4 format (AES-256-CBC per
// page, HMAC-SHA512, PBKDF2-HMAC-SHA512 for passphrases), so a DBA's `sqlcipher` 4 shell opens the
// file with the same key. The -wal file holds encrypted pages too; temp tables stay in memory.
//
// What opening guarantees: a wrong or missing key is an error naming the key source before
// anything is written (the key is checked on a read of sqlite_master first); a plain file where
// encryption is configured is refused with the command that encrypts it. Rekeying writes the new
// key to <key_file>.next before the database changes and renames it into place after, so a crash
// in between leaves a key that opens the file (the next open installs it).
import Database from 'better-sqlite3-multiple-ciphers';
import { closeSync, existsSync, fsyncSync, openSync, readSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { fail, isFedloraError } from './errors.ts';
import {
  describeKeySource, keyMaterial, newRandomKey, readKey, readKeyFile, writeKeyFile, type DatabaseSection, type KeySource,
} from './db-key.ts';

export interface CipherDbSpec {
  file: string;
  section: DatabaseSection;
  /** null when section.encryption is none. */
  source: KeySource | null;
  /** The config file the section came from (messages say where to change it). */
  configName: string;
  /** The command that encrypts a plain file / changes the key, e.g. "fedlora site rekey --site-dir /srv/site". */
  rekeyCommand: string;
}

const SQLITE_MAGIC = Buffer.from('SQLite format 3\0', 'latin1');

/** A plain SQLite file starts with its magic string; an encrypted one with random bytes. */
export function isPlainSqlite(file: string): boolean {
  const fd = openSync(file, 'r');
  try {
    const head = Buffer.alloc(16);
    return readSync(fd, head, 0, 16, 0) === 16 && head.equals(SQLITE_MAGIC);
  } finally {
    closeSync(fd);
  }
}

const hasContent = (file: string): boolean => existsSync(file) && statSync(file).size > 0;
const pendingKeyPath = (s: KeySource & { kind: 'file' }): string => `${s.path}.next`;

function setCipher(db: Database.Database): void {
  db.pragma("cipher = 'sqlcipher'");
  db.pragma('legacy = 4');
}

/** Open with a key and prove it right with a read; a wrong key closes the handle and throws SQLITE_NOTADB. */
function openKeyed(file: string, key: string, where: string, readonly: boolean): Database.Database {
  const db = new Database(file, { readonly, fileMustExist: readonly });
  try {
    setCipher(db);
    db.key(keyMaterial(key, where));
    db.prepare('SELECT count(*) FROM sqlite_master').get();
    db.pragma('temp_store = MEMORY');
    return db;
  } catch (e) {
    db.close();
    throw e;
  }
}

const isNotADb = (e: unknown): boolean => (e as { code?: string })?.code === 'SQLITE_NOTADB';

function wrongKey(spec: CipherDbSpec): Error {
  return fail(
    'FEDLORA_ERR_DB_KEY',
    `${spec.file}: the ${describeKeySource(spec.source!)} (${spec.source!.field}) does not open it: wrong key, or not a database; nothing was written to the file. ` +
      'Use the key the database was made or last rekeyed with (a backup made before a rekey needs the key of that time)',
  );
}

/** Open an encrypted (or, when configured so, plain) database file per its `database:` section. */
export function openCipherDb(spec: CipherDbSpec, o: { readonly?: boolean } = {}): Database.Database {
  const readonly = o.readonly ?? false;
  const exists = hasContent(spec.file);
  if (readonly && !exists) throw fail('FEDLORA_ERR_NOT_FOUND', `${spec.file} does not exist`);
  const plain = exists && isPlainSqlite(spec.file);
  if (spec.section.encryption === 'none' || !spec.source) {
    if (exists && !plain) {
      throw fail('FEDLORA_ERR_DB_KEY', `${spec.file} is encrypted but ${spec.configName} says database.encryption: none; set database.encryption: sqlcipher and its key source`);
    }
    return new Database(spec.file, { readonly, fileMustExist: readonly });
  }
  if (plain) {
    throw fail(
      'FEDLORA_ERR_DB_PLAINTEXT',
      `${spec.file} is not encrypted (made before encryption at rest, or restored from a plain copy) but ${spec.configName} asks for database.encryption: sqlcipher. ` +
        `Encrypt it in place with \`${spec.rekeyCommand}\` (stop the services that use it first), or keep it plain with database.encryption: none in ${spec.configName}`,
    );
  }
  const source = spec.source;
  const key = readKey(source, { create: !exists && !readonly });
  try {
    // A <key_file>.next left by a rekey that never committed stays (harmless); the next rekey replaces it.
    return openKeyed(spec.file, key, describeKeySource(source), readonly);
  } catch (e) {
    if (!isNotADb(e)) throw isFedloraError(e) ? e : fail('FEDLORA_ERR_IO', `${spec.file}: cannot open (${(e as Error).message})`);
    // A rekey that committed before its new key file was renamed into place: finish it.
    if (source.kind === 'file' && existsSync(pendingKeyPath(source))) {
      const next = readKeyFile(pendingKeyPath(source), source.field);
      let db: Database.Database;
      try {
        db = openKeyed(spec.file, next, `key file ${pendingKeyPath(source)}`, readonly);
      } catch (e2) {
        if (isNotADb(e2)) throw wrongKey(spec);
        throw e2;
      }
      installKeyFile(source.path, next);
      return db;
    }
    throw wrongKey(spec);
  }
}

/** Replace the key file atomically (write beside it, rename), then drop the pending copy. */
function installKeyFile(path: string, key: string): void {
  writeKeyFile(`${path}.tmp`, key);
  renameSync(`${path}.tmp`, path);
  fsyncDir(dirname(path));
  rmSync(`${path}.next`, { force: true });
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Leave WAL (a rekey rewrites every page; SQLite3 Multiple Ciphers does it in rollback-journal
 *  mode only). Another open connection makes this fail at once: the file is in use. */
function leaveWal(db: Database.Database, spec: CipherDbSpec): void {
  db.pragma('busy_timeout = 0');
  let mode: unknown;
  try {
    mode = db.pragma('journal_mode = DELETE', { simple: true });
  } catch (e) {
    if ((e as { code?: string }).code?.startsWith('SQLITE_BUSY')) mode = 'busy';
    else throw e;
  }
  if (mode !== 'delete') {
    db.close();
    throw fail('FEDLORA_ERR_DB_IN_USE', `${spec.file} is open in another process (the agent, the assistant or another fedlora command): stop them, then run \`${spec.rekeyCommand}\` again`);
  }
}

export interface RekeyResult {
  /** 'plain' when the file was not encrypted before. */
  from: 'plain' | 'encrypted';
  /** Where the new key is: the key file, or the variable/command the operator supplied it for. */
  keyAt: string;
}

/** Encrypt a plain file, or change the key of an encrypted one. With a key file the new key is
 *  random (or `newKey`); with key_env/key_command the operator supplies `newKey` and afterwards
 *  makes the variable/command give it. */
export function rekeyCipherDb(spec: CipherDbSpec, o: { newKey?: string } = {}): RekeyResult {
  if (spec.section.encryption === 'none' || !spec.source) {
    throw fail('FEDLORA_ERR_CONFIG', `${spec.configName}: database.encryption is none; set it to sqlcipher to encrypt ${spec.file}`);
  }
  if (!hasContent(spec.file)) throw fail('FEDLORA_ERR_NOT_FOUND', `${spec.file} does not exist: nothing to rekey (a new database is encrypted when it is made)`);
  const source = spec.source;
  if (source.kind !== 'file' && !o.newKey) {
    throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `the key comes from the ${describeKeySource(source)}: give the new key (--new-key-env NAME), then make ${source.kind === 'env' ? 'the variable' : 'the command'} give it`);
  }
  const plain = isPlainSqlite(spec.file);
  const db = plain ? new Database(spec.file) : openCipherDb(spec);
  leaveWal(db, spec);
  const newKey = (o.newKey ?? newRandomKey()).trim();
  const material = keyMaterial(newKey, 'the new key');
  try {
    if (source.kind === 'file') writeKeyFile(pendingKeyPath(source), newKey); // on disk before the file depends on it
    if (plain) setCipher(db);
    db.rekey(material);
    const check = db.pragma('quick_check', { simple: true });
    if (check !== 'ok') throw fail('FEDLORA_ERR_IO', `${spec.file}: quick_check after rekey says ${String(check)}`);
    db.pragma('journal_mode = WAL');
  } finally {
    db.close();
  }
  if (source.kind === 'file') installKeyFile(source.path, newKey);
  openCipherDb(spec, { readonly: true }).close(); // the new key opens it
  return { from: plain ? 'plain' : 'encrypted', keyAt: describeKeySource(source) };
}

/** A consistent copy of an open database (VACUUM INTO: a read transaction, the writers carry on),
 *  encrypted with the same key as the source. Written to DEST.partial, checked, then renamed. */
export function backupCipherDb(db: Database.Database, dest: string): void {
  if (existsSync(dest)) throw fail('FEDLORA_ERR_IO', `${dest} exists: a backup never overwrites`);
  const partial = `${dest}.partial`;
  rmSync(partial, { force: true });
  db.prepare('VACUUM INTO ?').run(partial);
  const fd = openSync(partial, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(partial, dest);
  fsyncDir(dirname(dest));
}

/** Open a copy (a backup) of a database with a given key, read-only, and check it. */
export function openCopyWithKey(file: string, key: string | null, where: string): Database.Database {
  if (!hasContent(file)) throw fail('FEDLORA_ERR_NOT_FOUND', `${file} does not exist`);
  const plain = isPlainSqlite(file);
  let db: Database.Database;
  if (plain || key === null) {
    if (!plain) throw fail('FEDLORA_ERR_DB_KEY', `${file} is encrypted: a key is needed to open it`);
    db = new Database(file, { readonly: true, fileMustExist: true });
  } else {
    try {
      db = openKeyed(file, key, where, true);
    } catch (e) {
      if (isNotADb(e)) throw fail('FEDLORA_ERR_DB_KEY', `${file}: the ${where} does not open it (wrong key, or not a database)`);
      throw e;
    }
  }
  const check = db.pragma('quick_check', { simple: true });
  if (check !== 'ok') {
    db.close();
    throw fail('FEDLORA_ERR_IO', `${file}: quick_check says ${String(check)}`);
  }
  return db;
}

/** Re-encrypt a file no one else has open (a restored copy) from `oldKey` (null: plain) to `newKey`. */
export function reencryptFile(file: string, oldKey: string | null, newKey: string): void {
  const db = oldKey === null ? new Database(file) : openKeyed(file, oldKey, 'the old key', false);
  try {
    db.pragma('journal_mode = DELETE');
    if (oldKey === null) setCipher(db);
    db.rekey(keyMaterial(newKey, 'the new key'));
    db.pragma('journal_mode = WAL');
  } finally {
    db.close();
  }
}
