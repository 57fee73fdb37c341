// How a database's migration list runs (coordinator.sqlite, site.sqlite): each entry once, in
// order, inside its own transaction; PRAGMA user_version records how many have run.
import type Database from 'better-sqlite3-multiple-ciphers';

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
