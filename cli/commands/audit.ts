// `fedlora audit verify|list`: check and read a tamper-evident audit log (shared/audit.ts).
//   --data-dir DIR  the coordinator's log: table audit_log in DIR/coordinator.sqlite (default)
//   --site-dir DIR  a site agent's log: table site_audit in DIR/site.sqlite
// verify walks the whole hash chain and names the first broken entry; exit code 1 if broken.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type Database from 'better-sqlite3-multiple-ciphers';
import { openSiteDb } from '../../site-agent/site-db.ts';
import { openCoordinatorDb } from '../../coordinator/store/migrations.ts';
import type { CliGroups } from '../groups.ts';
import { fail } from '../../shared/errors.ts';
import { AuditLog, parseAnchor, type AuditAnchor } from '../../shared/audit.ts';
import { defaultDataDir } from './pki.ts';

interface Where { dataDir?: string; siteDir?: string }

/** Open the log named by --data-dir / --site-dir (coordinator by default). */
export function openAuditLog(o: Where): { db: Database.Database; log: AuditLog; file: string; table: string } {
  if (o.dataDir && o.siteDir) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', 'give --data-dir (coordinator) or --site-dir (site), not both');
  const [file, table] = o.siteDir ? [join(o.siteDir, 'site.sqlite'), 'site_audit'] : [join(o.dataDir ?? defaultDataDir(), 'coordinator.sqlite'), 'audit_log'];
  if (!existsSync(file)) throw fail('FEDLORA_ERR_NOT_FOUND', `${file} does not exist (wrong ${o.siteDir ? '--site-dir' : '--data-dir'}?)`);
  const db = o.siteDir ? openSiteDb(o.siteDir) : openCoordinatorDb(file);
  if (!db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(table)) {
    db.close();
    throw fail('FEDLORA_ERR_NOT_FOUND', `${file} has no ${table} table: nothing has been audited there`);
  }
  return { db, log: new AuditLog(db, table), file, table };
}

export function register(g: CliGroups): void {
  g.audit
    .command('verify')
    .description('check the hash chain of an audit log; names the first broken entry (exit code 1 when broken)')
    .option('--data-dir <dir>', 'coordinator data dir (table audit_log in coordinator.sqlite)')
    .option('--site-dir <dir>', 'site dir (table site_audit in site.sqlite)')
    .option('--anchor <seq:hash>', 'an anchor printed earlier by `fedlora audit head`: that entry must still be there, unchanged (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--anchors <file>', 'a file of anchors, one SEQ:HASH per line (e.g. appended daily by `fedlora audit head`); # comments allowed')
    .option('--json', 'print the result as JSON')
    .action((o: Where & { json?: boolean; anchor: string[]; anchors?: string }) => {
      const anchors: AuditAnchor[] = [];
      try {
        o.anchor.forEach((a, i) => anchors.push(parseAnchor(a, `--anchor #${i + 1}`)));
        if (o.anchors) {
          if (!existsSync(o.anchors)) throw new Error(`--anchors ${o.anchors}: no such file`);
          readFileSync(o.anchors, 'utf8').split('\n').forEach((line, i) => {
            const text = line.replace(/#.*/, '').trim();
            if (text) anchors.push(parseAnchor(text, `${o.anchors}:${i + 1}`));
          });
        }
      } catch (e) {
        throw fail('FEDLORA_ERR_INVALID_ARGUMENT', (e as Error).message);
      }
      const { db, log, file, table } = openAuditLog(o);
      try {
        const r = log.verify(anchors);
        if (o.json) process.stdout.write(JSON.stringify({ file, table, ...r }) + '\n');
        else if (r.ok) process.stdout.write(`audit chain OK: ${r.entries} entries in ${file} (${table})${r.pruned ? `, ${r.pruned} older entries removed by retention` : ''}${anchors.length ? `, ${anchors.length} anchor(s) matched` : ' (no anchors given: a cut-off tail would go unnoticed)'}\n`);
        else {
          // Raw row (its details may not even parse): what the broken entry claims to be.
          const e = db.prepare(`SELECT ts, actor, action, subject FROM ${table} WHERE seq = ?`).get(r.firstBroken!.seq) as { ts: string; actor: string; action: string; subject: string } | undefined;
          process.stdout.write(`audit chain BROKEN at entry ${r.firstBroken!.seq}: ${r.firstBroken!.reason}` +
            (e ? ` [${e.ts} ${e.actor} ${e.action} ${e.subject}]` : '') + ` (${file}, table ${table}; entries before it are intact)\n`);
        }
        if (!r.ok) process.exitCode = 1;
      } finally {
        db.close();
      }
    });

  g.audit
    .command('head')
    .description('print the newest entry as an anchor SEQ:HASH; keep it outside this machine (e.g. daily, in write-once storage) and pass it to `audit verify --anchor` to detect a truncated log')
    .option('--data-dir <dir>', 'coordinator data dir (table audit_log in coordinator.sqlite)')
    .option('--site-dir <dir>', 'site dir (table site_audit in site.sqlite)')
    .option('--json', 'print {seq, hash, ts} as JSON')
    .action((o: Where & { json?: boolean }) => {
      const { db, log } = openAuditLog(o);
      try {
        const h = log.head();
        if (!h) throw fail('FEDLORA_ERR_NOT_FOUND', 'the audit log is empty: nothing to anchor yet');
        process.stdout.write(o.json ? JSON.stringify({ ...h, ts: new Date().toISOString() }) + '\n' : `${h.seq}:${h.hash}\n`);
      } finally {
        db.close();
      }
    });

  g.audit
    .command('list')
    .description('print audit entries, oldest first (the newest N with --limit)')
    .option('--data-dir <dir>', 'coordinator data dir (table audit_log in coordinator.sqlite)')
    .option('--site-dir <dir>', 'site dir (table site_audit in site.sqlite)')
    .option('--action <action>', 'only this action (enroll, token_issued, task, update_received, update_rejected, aggregate, publish, privacy_spend, revoke, admin_action, ...)')
    .option('--limit <n>', 'only the newest N entries')
    .option('--json', 'one JSON object per line')
    .action((o: Where & { action?: string; limit?: string; json?: boolean }) => {
      let limit: number | undefined;
      if (o.limit !== undefined) {
        limit = Number(o.limit);
        if (!Number.isInteger(limit) || limit < 1) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--limit ${JSON.stringify(o.limit)}: expected a positive integer`);
      }
      const { db, log } = openAuditLog(o);
      try {
        for (const e of log.list({ action: o.action, limit })) {
          process.stdout.write(o.json ? JSON.stringify(e) + '\n' : `${e.seq}\t${e.ts}\t${e.actor}\t${e.action}\t${e.subject}\t${JSON.stringify(e.details)}\n`);
        }
      } finally {
        db.close();
      }
    });
}
