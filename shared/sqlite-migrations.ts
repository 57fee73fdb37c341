// How a database's migration list runs (coordinator.sqlite, site.sqlite): each entry once, in
// order, inside its own transaction; PRAGMA user_version records how many have run. And how
// both databases are opened for it.
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type Database from 'better-sqlite3-multiple-ciphers';
import { fail, isFedloraError } from './errors.ts';
import { openCipherDb, type CipherDbSpec } from './sqlite-cipher.ts';

/** Run the entries of `list` the file has not run yet; returns the version before and after. */
export function runMigrations(db: Database.Database, list: readonly string[]): { from: number; to: number } {
  const from = db.pragma('user_version', { simple: true }) as number;
  for (let v = from; v < list.length; v++) {
    db.transaction(() => {
      db.exec(list[v]);
      db.pragma(`user_version = ${v + 1}`);
    }).immediate();
  }
  return { from, to: list.length };
}

/** Open (creating it and its folder if needed, encrypted as the spec says) the database of `spec`
 *  with `migrations` run. WAL, and synchronous=FULL: a commit that acknowledged something survives
 *  a power cut; `foreignKeys` turns on FOREIGN KEY enforcement. `readonly`: an existing file as it
 *  is (no migrations), for status and checks. `what` names the database in the error. */
export function openMigratedDb(spec: CipherDbSpec, migrations: readonly string[], o: { readonly?: boolean; what: string; foreignKeys?: boolean }): Database.Database {
  let db: Database.Database;
  try {
    if (!o.readonly) mkdirSync(dirname(spec.file), { recursive: true });
    db = openCipherDb(spec, { readonly: o.readonly });
  } catch (e) {
    throw isFedloraError(e) ? e : fail('FEDLORA_ERR_IO', `${spec.file}: cannot open ${o.what} (${(e as Error).message})`);
  }
  db.pragma('busy_timeout = 5000');
  if (o.readonly) return db;
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  if (o.foreignKeys) db.pragma('foreign_keys = ON');
  runMigrations(db, migrations);
  return db;
}
