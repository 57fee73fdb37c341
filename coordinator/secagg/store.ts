// SQLite persistence of secure-aggregation rounds, in the coordinator's database (tables
// secagg_*, created by coordinator/store/migrations.ts). Every stage
// message a site gets acknowledged is a committed row first. Nothing here holds a site's plain
// update: advertised public keys, AES-GCM-encrypted shares, masked vectors (uniform mod 2^32),
// and unmask shares (of survivors' self-mask seeds / dropped sites' mask keys — never both for
// one site). The unmasked sum is NOT stored: it is recomputed from these rows when the engine
// aggregates (also after a restart), and the rows are purged once the round is published/failed.
import type { Database } from 'better-sqlite3-multiple-ciphers';
import type { SecAggRoundConfig, SecAggServerStage } from '../../shared/secagg/messages.ts';

export interface SecAggRoundRow {
  job_id: string; round: number; attempt: number;
  stage: SecAggServerStage;
  config_json: string;
  advertise_deadline_ms: number;
  stage_timeout_ms: number;
  stage_deadline_ms: number | null;
  roster_json: string | null;
  u2_json: string | null;
  survivors_json: string | null;
  dropped_json: string | null;
  error: string | null;
  purged: number;
  created_ms: number;
  updated_ms: number;
}

export type MsgStage = 'advertise' | 'share' | 'unmask';
interface Key { job_id: string; round: number; attempt: number }

export class SecAggStore {
  constructor(readonly db: Database) {}
  tx<T>(fn: () => T): T {
    return this.db.transaction(fn).immediate();
  }

  insertRound(k: Key, cfg: SecAggRoundConfig, advertiseDeadlineMs: number, stageTimeoutMs: number, now: number): void {
    this.db.prepare(`INSERT OR IGNORE INTO secagg_rounds (job_id, round, attempt, stage, config_json, advertise_deadline_ms, stage_timeout_ms, created_ms, updated_ms)
      VALUES (?, ?, ?, 'advertise', ?, ?, ?, ?, ?)`).run(k.job_id, k.round, k.attempt, JSON.stringify(cfg), advertiseDeadlineMs, stageTimeoutMs, now, now);
  }
  round(k: Key): SecAggRoundRow | undefined {
    return this.db.prepare('SELECT * FROM secagg_rounds WHERE job_id = ? AND round = ? AND attempt = ?').get(k.job_id, k.round, k.attempt) as SecAggRoundRow | undefined;
  }
  /** Rounds whose rows still hold stage data (for the purge sweep). */
  unpurged(): SecAggRoundRow[] {
    return this.db.prepare('SELECT * FROM secagg_rounds WHERE purged = 0').all() as SecAggRoundRow[];
  }
  setStage(k: Key, stage: SecAggServerStage, now: number, f: { deadline?: number | null; roster?: unknown; u2?: string[]; survivors?: string[]; dropped?: string[]; error?: string } = {}): void {
    this.db.prepare(`UPDATE secagg_rounds SET stage = ?, updated_ms = ?, stage_deadline_ms = ?,
      roster_json = COALESCE(?, roster_json), u2_json = COALESCE(?, u2_json), survivors_json = COALESCE(?, survivors_json),
      dropped_json = COALESCE(?, dropped_json), error = COALESCE(?, error) WHERE job_id = ? AND round = ? AND attempt = ?`)
      .run(stage, now, f.deadline ?? null, f.roster === undefined ? null : JSON.stringify(f.roster), f.u2 ? JSON.stringify(f.u2) : null,
        f.survivors ? JSON.stringify(f.survivors) : null, f.dropped ? JSON.stringify(f.dropped) : null, f.error ?? null, k.job_id, k.round, k.attempt);
  }

  putMessage(k: Key, siteId: string, stage: MsgStage, payload: string, now: number): void {
    this.db.prepare(`INSERT OR REPLACE INTO secagg_messages (job_id, round, attempt, site_id, stage, payload, received_ms) VALUES (?, ?, ?, ?, ?, ?, ?)`)
      .run(k.job_id, k.round, k.attempt, siteId, stage, payload, now);
  }
  message(k: Key, siteId: string, stage: MsgStage): string | undefined {
    return (this.db.prepare('SELECT payload FROM secagg_messages WHERE job_id = ? AND round = ? AND attempt = ? AND site_id = ? AND stage = ?')
      .get(k.job_id, k.round, k.attempt, siteId, stage) as { payload: string } | undefined)?.payload;
  }
  messages(k: Key, stage: MsgStage): Array<{ site_id: string; payload: string }> {
    return this.db.prepare('SELECT site_id, payload FROM secagg_messages WHERE job_id = ? AND round = ? AND attempt = ? AND stage = ? ORDER BY site_id')
      .all(k.job_id, k.round, k.attempt, stage) as Array<{ site_id: string; payload: string }>;
  }

  chunk(k: Key, siteId: string, idx: number): Buffer | undefined {
    return (this.db.prepare('SELECT data FROM secagg_masked_chunks WHERE job_id = ? AND round = ? AND attempt = ? AND site_id = ? AND idx = ?')
      .get(k.job_id, k.round, k.attempt, siteId, idx) as { data: Buffer } | undefined)?.data;
  }
  putChunk(k: Key, siteId: string, idx: number, data: Buffer, now: number): void {
    this.db.prepare('INSERT INTO secagg_masked_chunks (job_id, round, attempt, site_id, idx, data, received_ms) VALUES (?, ?, ?, ?, ?, ?, ?)')
      .run(k.job_id, k.round, k.attempt, siteId, idx, data, now);
  }
  chunkCounts(k: Key): Map<string, number> {
    const rows = this.db.prepare('SELECT site_id, COUNT(*) AS n FROM secagg_masked_chunks WHERE job_id = ? AND round = ? AND attempt = ? GROUP BY site_id')
      .all(k.job_id, k.round, k.attempt) as Array<{ site_id: string; n: number }>;
    return new Map(rows.map((r) => [r.site_id, r.n]));
  }
  /** One site's chunks in index order (streamed: O(chunk) memory). */
  *chunks(k: Key, siteId: string): Generator<{ idx: number; data: Buffer }> {
    yield* this.db.prepare('SELECT idx, data FROM secagg_masked_chunks WHERE job_id = ? AND round = ? AND attempt = ? AND site_id = ? ORDER BY idx')
      .iterate(k.job_id, k.round, k.attempt, siteId) as Iterable<{ idx: number; data: Buffer }>;
  }
  deleteChunksOf(k: Key, siteIds: string[]): void {
    const st = this.db.prepare('DELETE FROM secagg_masked_chunks WHERE job_id = ? AND round = ? AND attempt = ? AND site_id = ?');
    for (const s of siteIds) st.run(k.job_id, k.round, k.attempt, s);
  }
  /** Drop the stage data of a finished round (keeps the round row: stage, roster ids, survivors). */
  purge(k: Key): void {
    this.tx(() => {
      this.db.prepare('DELETE FROM secagg_masked_chunks WHERE job_id = ? AND round = ? AND attempt = ?').run(k.job_id, k.round, k.attempt);
      this.db.prepare('DELETE FROM secagg_messages WHERE job_id = ? AND round = ? AND attempt = ?').run(k.job_id, k.round, k.attempt);
      this.db.prepare('UPDATE secagg_rounds SET purged = 1 WHERE job_id = ? AND round = ? AND attempt = ?').run(k.job_id, k.round, k.attempt);
    });
  }
}
