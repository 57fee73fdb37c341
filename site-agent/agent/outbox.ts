// The site's durable outbox of adapter updates. An update is written here (bytes under
// <siteDir>/outbox/<update_id>.safetensors, the exact signed header in SQLite) BEFORE its
// first byte is sent, so an agent killed mid-upload (or before it saw the coordinator's
// acknowledgement) resumes the SAME update after a restart instead of retraining and sending
// a second one under a new id. States:
//   pending       recorded, not yet acknowledged complete by the coordinator
//   acknowledged  the coordinator answered complete (bytes deleted; the row stays as proof)
//   discarded     the coordinator will never take it (round closed, rejected, not selected);
//                 bytes deleted, the reason kept
// Table site_outbox of site.sqlite (created by its migration list, site-agent/site-db.ts).

import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type Database from 'better-sqlite3-multiple-ciphers';
import { fail } from '../../shared/errors.ts';
import { UPDATE_ID_RE } from '../../shared/transfer/chunks.ts';
import type { UpdateHeaderOut } from './wire.ts';

export type OutboxState = 'pending' | 'acknowledged' | 'discarded';

/** What the agent reports and audits about an update once it is acknowledged. */
export interface OutboxInfo {
  trainLoss: number | null;
  tokensPerSecond: number;
  numExamples: number;
  payloadKind: string;
  tensors: number;
  l2Norm: number;
  /** Peak resident memory of the training and the bits of its frozen base weights (when known). */
  peakRssBytes?: number;
  weightBits?: number;
  /** The LoRA rank the site trained, when below the job's (policy.max_lora_rank). */
  loraRank?: number;
  /** Distillation jobs: the KL to the teacher at the last step. */
  trainKl?: number;
}

export interface OutboxEntry {
  updateId: string;
  taskId: string;
  jobId: string;
  round: number;
  header: UpdateHeaderOut;
  info: OutboxInfo;
  file: string;
  state: OutboxState;
  reason: string | null;
  createdMs: number;
  updatedMs: number;
}

interface Row {
  update_id: string;
  task_id: string;
  job_id: string;
  round: number;
  header_json: string;
  info_json: string;
  file: string;
  state: OutboxState;
  reason: string | null;
  created_ms: number;
  updated_ms: number;
}

function headerToJson(h: UpdateHeaderOut): string {
  return JSON.stringify({ ...h, signature: Buffer.from(h.signature).toString('base64'), metadataJson: Buffer.from(h.metadataJson).toString('base64') });
}

function headerFromJson(s: string): UpdateHeaderOut {
  const o = JSON.parse(s) as UpdateHeaderOut & { signature: string; metadataJson: string };
  return { ...o, signature: Buffer.from(o.signature, 'base64'), metadataJson: Buffer.from(o.metadataJson, 'base64') };
}

/** Write bytes so that after a crash the file is either absent or whole: tmp, fsync, rename, fsync dir. */
function writeDurably(file: string, dir: string, bytes: Uint8Array): void {
  const tmp = `${file}.tmp`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    let off = 0;
    while (off < bytes.length) off += writeSync(fd, bytes, off, bytes.length - off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
  const dfd = openSync(dir, 'r');
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

export class SiteOutbox {
  readonly dir: string;

  constructor(private readonly db: Database.Database, siteDir: string, private readonly now: () => number = Date.now) {
    this.dir = join(siteDir, 'outbox');
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
  }

  /** Record an update (bytes first, then the row): from here on it is resumed, never redone. */
  put(header: UpdateHeaderOut, bytes: Uint8Array, info: OutboxInfo): OutboxEntry {
    if (!UPDATE_ID_RE.test(header.updateId)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `outbox: update id ${JSON.stringify(header.updateId)} must match ${UPDATE_ID_RE}`);
    if (header.totalBytes !== bytes.length) throw fail('FEDLORA_ERR_UPDATE_INVALID', `outbox: update ${header.updateId} header says ${header.totalBytes} bytes, payload has ${bytes.length}`);
    const file = join(this.dir, `${header.updateId}.safetensors`);
    writeDurably(file, this.dir, bytes);
    const t = this.now();
    this.db.prepare(`INSERT INTO site_outbox (update_id, task_id, job_id, round, header_json, info_json, file, state, reason, created_ms, updated_ms)
      VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', NULL, ?, ?)`).run(header.updateId, header.taskId, header.jobId, header.round, headerToJson(header), JSON.stringify(info), file, t, t);
    return this.get(header.updateId)!;
  }

  get(updateId: string): OutboxEntry | undefined {
    const r = this.db.prepare('SELECT * FROM site_outbox WHERE update_id = ?').get(updateId) as Row | undefined;
    return r && toEntry(r);
  }

  /** The entry that decides what a (re)delivered task does: a pending or acknowledged one if
   *  there is one (there is at most one of those per task), else the latest discarded one. */
  forTask(taskId: string): OutboxEntry | undefined {
    const r = this.db.prepare(`SELECT * FROM site_outbox WHERE task_id = ?
      ORDER BY CASE state WHEN 'discarded' THEN 1 ELSE 0 END, created_ms DESC LIMIT 1`).get(taskId) as Row | undefined;
    return r && toEntry(r);
  }

  pending(): OutboxEntry[] {
    return (this.db.prepare(`SELECT * FROM site_outbox WHERE state = 'pending' ORDER BY created_ms, update_id`).all() as Row[]).map(toEntry);
  }

  list(): OutboxEntry[] {
    return (this.db.prepare('SELECT * FROM site_outbox ORDER BY created_ms, update_id').all() as Row[]).map(toEntry);
  }

  /** The coordinator holds it whole: commit that (with `alsoInTx`, e.g. the egress audit entry), then drop the bytes. */
  acknowledge(updateId: string, alsoInTx?: () => void): void {
    this.settle(updateId, 'acknowledged', null, alsoInTx);
  }

  /** The coordinator will never take it: keep why, drop the bytes. */
  discard(updateId: string, reason: string, alsoInTx?: () => void): void {
    this.settle(updateId, 'discarded', reason.slice(0, 2000), alsoInTx);
  }

  private settle(updateId: string, state: OutboxState, reason: string | null, alsoInTx?: () => void): void {
    const e = this.get(updateId);
    if (!e) throw fail('FEDLORA_ERR_NOT_FOUND', `outbox: no update ${updateId}`);
    if (e.state !== 'pending') throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `outbox: update ${updateId} is already ${e.state}`);
    this.db.transaction(() => {
      this.db.prepare('UPDATE site_outbox SET state = ?, reason = ?, updated_ms = ? WHERE update_id = ?').run(state, reason, this.now(), updateId);
      alsoInTx?.();
    })();
    rmSync(e.file, { force: true });
  }

  /** Files without a pending row: a crash between writing the bytes and recording them, or
   *  between settling a row and deleting its bytes. Removed; returns their names. */
  removeOrphans(): string[] {
    const keep = new Set(this.pending().map((e) => e.file));
    const removed: string[] = [];
    for (const name of readdirSync(this.dir)) {
      const f = join(this.dir, name);
      if (keep.has(f)) continue;
      rmSync(f, { force: true, recursive: true });
      removed.push(name);
    }
    return removed;
  }
}

function toEntry(r: Row): OutboxEntry {
  return {
    updateId: r.update_id, taskId: r.task_id, jobId: r.job_id, round: r.round, header: headerFromJson(r.header_json), info: JSON.parse(r.info_json) as OutboxInfo,
    file: r.file, state: r.state, reason: r.reason, createdMs: r.created_ms, updatedMs: r.updated_ms,
  };
}
