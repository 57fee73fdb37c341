// The coordinator's state in SQLite (better-sqlite3-multiple-ciphers, WAL, synchronous=FULL so a commit that
// acknowledged something to a site survives a power cut). All writes are small synchronous
// transactions; callers commit BEFORE they answer the site.
import type { Database as Db } from 'better-sqlite3-multiple-ciphers';
import { openCoordinatorDb } from './migrations.ts';
import { coordinatorAudit } from './audit.ts';
import type { AuditLog } from '../../shared/audit.ts';
import type { SharePolicy } from '../../shared/metrics-sharing.ts';

export type JobStatus = 'running' | 'completed' | 'failed' | 'cancelled';
export type RoundState = 'open' | 'aggregating' | 'published' | 'failed';
export type UpdateStatus = 'receiving' | 'received' | 'accepted' | 'rejected' | 'discarded';
export type TaskStatus = 'pending' | 'delivered' | 'declined' | 'submitted' | 'cancelled';

export interface SiteRow { id: string; status: 'active' | 'disabled' | 'revoked'; last_seen_ms: number | null; cert_serial: string | null; cert_not_after_ms: number | null; agent_version: string | null; state: string | null; enrolled_at_ms: number }
export interface JobRow { id: string; name: string; spec_json: string; status: JobStatus; current_version: number; error: string | null; created_ms: number; updated_ms: number }
export interface RoundRow {
  job_id: string; round: number; attempt: number; state: RoundState; base_version: number; selected_json: string; seed: number;
  deadline_ms: number; started_ms: number; aggregating_ms: number | null; published_ms: number | null; error: string | null;
  strategy_state: string | null; metrics_json: string | null; task_config: string | null;
}
export interface TaskRow { task_id: string; job_id: string; round: number; attempt: number; site_id: string; kind: string; status: TaskStatus; decline_reason: string | null; decline_code: string | null; created_ms: number }
export interface UpdateRow {
  update_id: string; job_id: string; round: number; attempt: number; site_id: string; task_id: string; base_version: number; path: string;
  sha256: string; size: number; chunk_size: number; received_chunks: number; received_bytes: number; examples: number; norm: number | null;
  clipped: number | null; status: UpdateStatus; reason: string | null; signature: Buffer | null; metadata_json: string | null; received_ms: number;
  /** The LoRA rank of an accepted update below the job's (its metadata lora_r); null: the job's. */
  lora_r?: number | null;
}
export interface AdapterVersionRow { job_id: string; version: number; owner_site: string; round: number; sha256: string; size: number; manifest_json: string; manifest_sha256: string; signature: string; path: string; created_ms: number }
export interface MetricRow {
  id: number; job_id: string; round: number; site_id: string; kind: string; metric: string; value: number; count: number; model_owner: string; adapter_version: number | null;
  phase: string | null; task_id: string | null; created_ms: number;
  /** '' = the whole set (shared/metric-subset.ts); eval_set '' = the held-out set, 'exam:<name>'. */
  subset: string; eval_set: string;
  /** The site's 95% bootstrap interval (null for counts and rates). */
  ci_low: number | null; ci_high: number | null; ci_resamples: number | null;
}
export interface LedgerRow { job_id: string; round: number; epsilon: number; delta: number; noise_multiplier: number; sample_rate: number; created_ms: number }

export class CoordinatorStore {
  readonly db: Db;
  constructor(file: string) {
    this.db = openCoordinatorDb(file);
  }
  close(): void {
    if (this.db.open) this.db.close();
  }
  /** The tamper-evident audit log (table audit_log); append inside the change's transaction. */
  get audit(): AuditLog {
    return coordinatorAudit(this.db);
  }
  tx<T>(fn: () => T): T {
    return this.db.transaction(fn).immediate();
  }

  // ---- sites ----------------------------------------------------------------------------
  upsertSite(id: string, now: number, cert?: { serial: string; notAfter: number }): void {
    this.db.prepare(`INSERT INTO sites (id, status, enrolled_at_ms, cert_serial, cert_not_after_ms) VALUES (?, 'active', ?, ?, ?)
      ON CONFLICT(id) DO UPDATE SET cert_serial = COALESCE(excluded.cert_serial, cert_serial), cert_not_after_ms = COALESCE(excluded.cert_not_after_ms, cert_not_after_ms)`)
      .run(id, now, cert?.serial ?? null, cert?.notAfter ?? null);
  }
  /** A sign of life; with what the call said (a heartbeat's share_site_metrics policy, ...). */
  touchSite(id: string, now: number, info: { agentVersion?: string; state?: string; cert?: { serial: string; notAfter: number }; shareSiteMetrics?: SharePolicy | null } = {}): void {
    this.upsertSite(id, now, info.cert);
    this.db.prepare('UPDATE sites SET last_seen_ms = ?, agent_version = COALESCE(?, agent_version), state = COALESCE(?, state), share_site_metrics = COALESCE(?, share_site_metrics) WHERE id = ?')
      .run(now, info.agentVersion || null, info.state || null, info.shareSiteMetrics ?? null, id);
  }
  /** Training throughput from a heartbeat (HeartbeatRequest.training_tokens_per_s); 0 is kept too. */
  setSiteThroughput(id: string, tokensPerS: number, now: number): void {
    if (!Number.isFinite(tokensPerS) || tokensPerS < 0) return;
    this.db.prepare('UPDATE sites SET training_tokens_per_s = ?, training_tokens_at_ms = ? WHERE id = ?').run(tokensPerS, now, id);
  }
  site(id: string): SiteRow | undefined {
    return this.db.prepare('SELECT * FROM sites WHERE id = ?').get(id) as SiteRow | undefined;
  }
  sites(): SiteRow[] {
    return this.db.prepare('SELECT * FROM sites ORDER BY id').all() as SiteRow[];
  }
  /** Active sites, online or not (a disabled or revoked site is never eligible). */
  activeSites(): string[] {
    return (this.db.prepare(`SELECT id FROM sites WHERE status = 'active' ORDER BY id`).all() as { id: string }[]).map((r) => r.id);
  }
  /** Active sites seen at or after `since` (a disabled or revoked site is never online). */
  onlineSites(since: number): string[] {
    return (this.db.prepare(`SELECT id FROM sites WHERE status = 'active' AND last_seen_ms >= ? ORDER BY id`).all(since) as { id: string }[]).map((r) => r.id);
  }

  // ---- jobs -----------------------------------------------------------------------------
  insertJob(j: { id: string; name: string; specJson: string; now: number }): void {
    this.db.prepare(`INSERT INTO jobs (id, name, spec_json, status, created_ms, updated_ms) VALUES (?, ?, ?, 'running', ?, ?)`).run(j.id, j.name, j.specJson, j.now, j.now);
  }
  job(id: string): JobRow | undefined {
    return this.db.prepare('SELECT * FROM jobs WHERE id = ?').get(id) as JobRow | undefined;
  }
  jobs(status?: JobStatus): JobRow[] {
    return (status ? this.db.prepare('SELECT * FROM jobs WHERE status = ? ORDER BY created_ms, id').all(status) : this.db.prepare('SELECT * FROM jobs ORDER BY created_ms, id').all()) as JobRow[];
  }
  setJobStatus(id: string, status: JobStatus, now: number, error: string | null = null): void {
    this.db.prepare('UPDATE jobs SET status = ?, error = ?, updated_ms = ? WHERE id = ?').run(status, error, now, id);
  }
  setJobVersion(id: string, version: number, now: number): void {
    this.db.prepare('UPDATE jobs SET current_version = ?, updated_ms = ? WHERE id = ?').run(version, now, id);
  }

  // ---- rounds ---------------------------------------------------------------------------
  insertRound(r: Omit<RoundRow, 'aggregating_ms' | 'published_ms' | 'error' | 'strategy_state' | 'metrics_json'>): void {
    this.db.prepare(`INSERT INTO rounds (job_id, round, attempt, state, base_version, selected_json, seed, deadline_ms, started_ms, task_config)
      VALUES (@job_id, @round, @attempt, @state, @base_version, @selected_json, @seed, @deadline_ms, @started_ms, @task_config)`).run(r);
  }
  /** The newest attempt of the newest round of a job. */
  currentRound(jobId: string): RoundRow | undefined {
    return this.db.prepare('SELECT * FROM rounds WHERE job_id = ? ORDER BY round DESC, attempt DESC LIMIT 1').get(jobId) as RoundRow | undefined;
  }
  rounds(jobId: string): RoundRow[] {
    return this.db.prepare('SELECT * FROM rounds WHERE job_id = ? ORDER BY round, attempt').all(jobId) as RoundRow[];
  }
  lastPublishedRound(jobId: string): RoundRow | undefined {
    return this.db.prepare(`SELECT * FROM rounds WHERE job_id = ? AND state = 'published' ORDER BY round DESC LIMIT 1`).get(jobId) as RoundRow | undefined;
  }
  setRoundState(jobId: string, round: number, attempt: number, state: RoundState, fields: { now: number; error?: string; strategyState?: string; metricsJson?: string }): void {
    const col = state === 'aggregating' ? 'aggregating_ms' : state === 'published' ? 'published_ms' : null;
    this.db.prepare(`UPDATE rounds SET state = ?, error = COALESCE(?, error), strategy_state = COALESCE(?, strategy_state), metrics_json = COALESCE(?, metrics_json)
      ${col ? `, ${col} = COALESCE(${col}, ?)` : ''} WHERE job_id = ? AND round = ? AND attempt = ?`)
      .run(...[state, fields.error ?? null, fields.strategyState ?? null, fields.metricsJson ?? null, ...(col ? [fields.now] : []), jobId, round, attempt]);
  }

  // ---- tasks ----------------------------------------------------------------------------
  insertTask(t: Omit<TaskRow, 'decline_reason' | 'decline_code'>): void {
    this.db.prepare(`INSERT INTO tasks (task_id, job_id, round, attempt, site_id, kind, status, created_ms) VALUES (@task_id, @job_id, @round, @attempt, @site_id, @kind, @status, @created_ms)`).run(t);
  }
  task(taskId: string): TaskRow | undefined {
    return this.db.prepare('SELECT * FROM tasks WHERE task_id = ?').get(taskId) as TaskRow | undefined;
  }
  roundTasks(jobId: string, round: number, attempt: number): TaskRow[] {
    return this.db.prepare('SELECT * FROM tasks WHERE job_id = ? AND round = ? AND attempt = ? ORDER BY site_id').all(jobId, round, attempt) as TaskRow[];
  }
  /** Each site's task of the last round attempt it was in (in round order, the later wins), by site id. */
  lastRoundTaskPerSite(jobId: string): Map<string, TaskRow> {
    const last = new Map<string, TaskRow>();
    for (const r of this.rounds(jobId)) for (const t of this.roundTasks(jobId, r.round, r.attempt)) last.set(t.site_id, t);
    return last;
  }
  /** Tasks a site still has to work on: in an open round attempt of a running job. */
  openTasksFor(siteId: string): TaskRow[] {
    return this.db.prepare(`SELECT t.* FROM tasks t JOIN rounds r ON r.job_id = t.job_id AND r.round = t.round AND r.attempt = t.attempt
      JOIN jobs j ON j.id = t.job_id WHERE t.site_id = ? AND t.status IN ('pending','delivered') AND r.state = 'open' AND j.status = 'running' ORDER BY t.created_ms`).all(siteId) as TaskRow[];
  }
  setTaskStatus(taskId: string, status: TaskStatus, decline?: { reason: string; code: string }): void {
    this.db.prepare('UPDATE tasks SET status = ?, decline_reason = COALESCE(?, decline_reason), decline_code = COALESCE(?, decline_code) WHERE task_id = ?')
      .run(status, decline?.reason ?? null, decline?.code ?? null, taskId);
  }

  // ---- updates --------------------------------------------------------------------------
  update(updateId: string): UpdateRow | undefined {
    return this.db.prepare('SELECT * FROM updates WHERE update_id = ?').get(updateId) as UpdateRow | undefined;
  }
  insertUpdate(u: Omit<UpdateRow, 'received_chunks' | 'received_bytes' | 'reason'>): void {
    this.db.prepare(`INSERT INTO updates (update_id, job_id, round, attempt, site_id, task_id, base_version, path, sha256, size, chunk_size, examples, norm, clipped, status, signature, metadata_json, received_ms)
      VALUES (@update_id, @job_id, @round, @attempt, @site_id, @task_id, @base_version, @path, @sha256, @size, @chunk_size, @examples, @norm, @clipped, @status, @signature, @metadata_json, @received_ms)`).run(u);
  }
  setUpdateProgress(updateId: string, chunks: number, bytes: number): void {
    this.db.prepare('UPDATE updates SET received_chunks = ?, received_bytes = ? WHERE update_id = ?').run(chunks, bytes, updateId);
  }
  /** Upload progress of a still-receiving update, committed without waiting for the WAL fsync
   *  (synchronous=NORMAL for this one commit). Only for progress whose bytes are already
   *  fsynced: a power cut may roll it back to an earlier value, which is always behind what is
   *  durable on disk, never ahead (the next FULL commit makes it durable). False if the row is
   *  no longer 'receiving'. */
  advanceUploadProgress(updateId: string, chunks: number, bytes: number): boolean {
    this.db.pragma('synchronous = NORMAL');
    try {
      return this.db.prepare(`UPDATE updates SET received_chunks = ?, received_bytes = ? WHERE update_id = ? AND status = 'receiving'`).run(chunks, bytes, updateId).changes === 1;
    } finally {
      this.db.pragma('synchronous = FULL');
    }
  }
  setUpdateLoraRank(updateId: string, loraR: number): void {
    this.db.prepare('UPDATE updates SET lora_r = ? WHERE update_id = ?').run(loraR, updateId);
  }
  setUpdateStatus(updateId: string, status: UpdateStatus, reason: string | null = null, path?: string): void {
    this.db.prepare('UPDATE updates SET status = ?, reason = COALESCE(?, reason), path = COALESCE(?, path) WHERE update_id = ?').run(status, reason, path ?? null, updateId);
  }
  /** Another update that carried exactly this signature (a replay), if any. Rejected rows do
   *  not count: their signature may never have verified (e.g. one refused at admission). */
  updateBySignature(signature: Uint8Array, exceptUpdateId: string): UpdateRow | undefined {
    return this.db.prepare(`SELECT * FROM updates WHERE signature = ? AND update_id != ? AND status != 'rejected' LIMIT 1`).get(Buffer.from(signature), exceptUpdateId) as UpdateRow | undefined;
  }
  roundUpdates(jobId: string, round: number, attempt: number, status?: UpdateStatus): UpdateRow[] {
    return (status
      ? this.db.prepare('SELECT * FROM updates WHERE job_id = ? AND round = ? AND attempt = ? AND status = ? ORDER BY site_id, update_id').all(jobId, round, attempt, status)
      : this.db.prepare('SELECT * FROM updates WHERE job_id = ? AND round = ? AND attempt = ? ORDER BY site_id, update_id').all(jobId, round, attempt)) as UpdateRow[];
  }

  // ---- adapters -------------------------------------------------------------------------
  insertAdapterVersion(a: AdapterVersionRow): void {
    this.db.prepare(`INSERT OR IGNORE INTO adapter_versions (job_id, version, owner_site, round, sha256, size, manifest_json, manifest_sha256, signature, path, created_ms)
      VALUES (@job_id, @version, @owner_site, @round, @sha256, @size, @manifest_json, @manifest_sha256, @signature, @path, @created_ms)`).run(a);
  }
  adapterVersion(jobId: string, version: number, ownerSite = ''): AdapterVersionRow | undefined {
    return this.db.prepare('SELECT * FROM adapter_versions WHERE job_id = ? AND version = ? AND owner_site = ?').get(jobId, version, ownerSite) as AdapterVersionRow | undefined;
  }
  /** A site's latest shared local-only adapter (for cross-evaluation). */
  latestOwnedAdapter(jobId: string, ownerSite: string): AdapterVersionRow | undefined {
    return this.db.prepare('SELECT * FROM adapter_versions WHERE job_id = ? AND owner_site = ? ORDER BY version DESC LIMIT 1').get(jobId, ownerSite) as AdapterVersionRow | undefined;
  }
  adapterVersions(jobId: string): AdapterVersionRow[] {
    return this.db.prepare(`SELECT * FROM adapter_versions WHERE job_id = ? AND owner_site = '' ORDER BY version`).all(jobId) as AdapterVersionRow[];
  }

  // ---- metrics, privacy -----------------------------------------------------------------
  /** Returns the new row's id. */
  insertMetric(m: Omit<MetricRow, 'id'>): number {
    return Number(this.db.prepare(`INSERT INTO metrics (job_id, round, site_id, kind, metric, value, count, model_owner, adapter_version, phase, task_id, created_ms, subset, eval_set, ci_low, ci_high, ci_resamples)
      VALUES (@job_id, @round, @site_id, @kind, @metric, @value, @count, @model_owner, @adapter_version, @phase, @task_id, @created_ms, @subset, @eval_set, @ci_low, @ci_high, @ci_resamples)`).run(m).lastInsertRowid);
  }
  metrics(jobId: string, f: { site?: string; metric?: string; kind?: string; subset?: string; evalSet?: string } = {}): MetricRow[] {
    const where = ['job_id = @job'];
    if (f.site) where.push('site_id = @site');
    if (f.metric) where.push('metric = @metric');
    if (f.kind) where.push('kind = @kind');
    if (f.subset !== undefined) where.push('subset = @subset');
    if (f.evalSet !== undefined) where.push('eval_set = @evalSet');
    return this.db.prepare(`SELECT * FROM metrics WHERE ${where.join(' AND ')} ORDER BY round, site_id, kind, metric, subset, id`)
      .all({ job: jobId, site: f.site, metric: f.metric, kind: f.kind, subset: f.subset, evalSet: f.evalSet }) as MetricRow[];
  }
  recordPrivacy(l: LedgerRow): void {
    this.db.prepare(`INSERT OR REPLACE INTO privacy_ledger (job_id, round, epsilon, delta, noise_multiplier, sample_rate, created_ms)
      VALUES (@job_id, @round, @epsilon, @delta, @noise_multiplier, @sample_rate, @created_ms)`).run(l);
  }
  privacyLedger(jobId: string): LedgerRow[] {
    return this.db.prepare('SELECT * FROM privacy_ledger WHERE job_id = ? ORDER BY round').all(jobId) as LedgerRow[];
  }
}
