// A site agent SIGKILLed mid-upload and right after its upload, with real processes (harness.ts):
// hospital-2 dials the coordinator through a TCP proxy that paces its uplink to 48 KB/s, and
// its adapter (r=64 on all 7 modules) goes out in 64 KiB chunks, so an upload lasts seconds.
//   A  killed mid-upload, restarted at once: the SAME update id resumes from the chunks the
//      coordinator persisted (no retraining, no second update), the round completes.
//   B  killed right after its update was accepted: no second update row, nothing double
//      counted, it takes part in the next round.
//   C  killed mid-upload and kept down until the round closes at its deadline with the other
//      site: the half-received row becomes 'discarded' and its .part file is gone; restarted,
//      the site's outbox marks its entry discarded and the site rejoins the next round.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { openSiteDb } from '../../site-agent/site-db.ts';
import { setupFederation, type Federation, type Proc } from './harness.ts';
import { ThrottleProxy } from './throttle-proxy.ts';
import { TEST_TIMEOUT_MS } from '../runner/limits.ts';

const CHUNK = 64 * 1024;
const UPLINK_BYTES_PER_S = 48 * 1024;
const ALL_MODULES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
const TRAIN = { local_steps: 2, learning_rate: 5e-3, optimizer: 'adamw', batch_tokens: 512, seed: 11, warmup_steps: 0, max_grad_norm: 1 };

let fed: Federation;
let proxy: ThrottleProxy;
beforeAll(async () => {
  // A heartbeat timeout much longer than a restart: the killed site stays "online" and is selected
  // for the round that opens while it is down (it gets that task when it is back).
  // Upload progress committed after every chunk (commit_group_bytes 0), so a kill can land in the
  // middle of an upload the coordinator has recorded; group commit's own crash path is
  // upload-group-commit-kill.test.ts.
  fed = await setupFederation({ sites: 2, heartbeatTimeoutUnits: 20, siteChunkSize: CHUNK, coordinatorPatch: (cfg) => { cfg.transfer = { commit_group_bytes: 0 }; }, model: { hidden: 64, intermediate: 128, heads: 4, kvHeads: 2, layers: 1 } });
  proxy = new ThrottleProxy(fed.fedPort, UPLINK_BYTES_PER_S);
  await proxy.start();
});
afterAll(async () => {
  await proxy?.close();
  await fed?.stopAll();
});

interface UpdateRow { update_id: string; round: number; attempt: number; site_id: string; task_id: string; status: string; reason: string | null; received_chunks: number; size: number; chunk_size: number; path: string }
interface OutboxRow { update_id: string; task_id: string; state: string; reason: string | null; file: string }

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const chunksOf = (u: UpdateRow) => Math.ceil(u.size / u.chunk_size);

/** Poll the coordinator's SQLite every 25 ms (a kill must land inside a short window), for at
 *  most `units` units of work (fed.clock) plus `plusMs`. */
async function pollRow(what: string, units: number, plusMs: number, sql: string, ...params: unknown[]): Promise<UpdateRow> {
  const budget = fed.clock.budgetMs(units) + plusMs;
  const until = Date.now() + budget;
  for (;;) {
    const [row] = fed.query<UpdateRow>(sql, ...params);
    if (row) return row;
    if (Date.now() > until) throw new Error(`timed out after ${budget} ms (${fed.clock.explain(units)} + ${plusMs} ms) waiting for ${what}`);
    await sleep(25);
  }
}

/** hospital-2's update row of `round` once 0 < received_chunks < all chunks: a round's training,
 *  then part of the paced upload (`uploadMs`: its whole length at most). */
const halfUploaded = (jobId: string, round: number, uploadMs: number) =>
  pollRow(`hospital-2's round-${round} upload half done`, 2, uploadMs,
    `SELECT * FROM updates WHERE job_id = ? AND round = ? AND site_id = 'hospital-2' AND status = 'receiving' AND received_chunks > 0 AND received_bytes < size`, jobId, round);

/** The site's own outbox, read-only (WAL: safe while the agent runs or after it was killed). */
function siteOutbox(i: number): OutboxRow[] {
  const db = openSiteDb(fed.sites[i].dir, { readonly: true });
  try {
    return db.prepare('SELECT update_id, task_id, state, reason, file FROM site_outbox ORDER BY created_ms').all() as OutboxRow[];
  } finally {
    db.close();
  }
}
function siteAudit(i: number, action: string): { subject: string; details: Record<string, unknown> }[] {
  const db = openSiteDb(fed.sites[i].dir, { readonly: true });
  try {
    return (db.prepare('SELECT subject, details FROM site_audit WHERE action = ? ORDER BY seq').all(action) as { subject: string; details: string }[]).map((r) => ({ subject: r.subject, details: JSON.parse(r.details) }));
  } finally {
    db.close();
  }
}

/** pino lines of a site's log file (both runs append to it). */
function logLines(p: Proc): Record<string, unknown>[] {
  return readFileSync(p.log, 'utf8').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
}

async function jobDone(jobId: string, units: number, plusMs = 0): Promise<{ status: string; current_version: number }> {
  return fed.waitFor(`job ${jobId} completed`, units, async () => {
    const j = await fed.api<{ status: string; current_version: number; error: string | null }>(`/api/jobs/${jobId}`);
    if (j.status === 'failed') throw new Error(`job failed: ${j.error}`);
    return j.status === 'completed' ? j : null;
  }, plusMs);
}

/** Invariants after every job: one accepted update per (round, attempt, site), no upload left
 *  'receiving', every round published once, versions 1..rounds. */
function assertClean(jobId: string, rounds: number): void {
  expect(fed.query(`SELECT round, attempt, site_id, COUNT(*) n FROM updates WHERE job_id = ? AND status = 'accepted' GROUP BY round, attempt, site_id HAVING n > 1`, jobId)).toEqual([]);
  expect(fed.query(`SELECT update_id FROM updates WHERE job_id = ? AND status = 'receiving'`, jobId)).toEqual([]);
  expect(fed.query<{ round: number; n: number }>(`SELECT round, COUNT(*) n FROM rounds WHERE job_id = ? AND state = 'published' GROUP BY round ORDER BY round`, jobId))
    .toEqual(Array.from({ length: rounds }, (_, k) => ({ round: k + 1, n: 1 })));
  expect(fed.query<{ version: number }>(`SELECT version FROM adapter_versions WHERE job_id = ? AND version > 0 AND owner_site = '' ORDER BY version`, jobId).map((v) => v.version))
    .toEqual(Array.from({ length: rounds }, (_, k) => k + 1));
  // The aggregation of each round names each site's update once.
  for (const a of fed.query<{ details: string }>(`SELECT details FROM audit_log WHERE action = 'aggregate' AND subject LIKE ?`, `${jobId}/%`)) {
    const sites = (JSON.parse(a.details).updates as { site: string }[]).map((u) => u.site);
    expect(new Set(sites).size).toBe(sites.length);
  }
}

describe('fault: site killed mid-upload and after upload', () => {
  it('resumes the same update, never double counts, discards a half upload when its round closes, rejoins', async () => {
    const t0 = Date.now();
    fed.startSite(0);
    let s2: Proc = fed.startSite(1, `127.0.0.1:${proxy.port}`);
    await fed.waitFor('both sites online', 2, async () => {
      const r = await fed.api<{ sites: { id: string; online?: boolean }[] }>('/api/sites');
      return r.sites.filter((s) => s.online).length === 2 ? true : null;
    });
    expect(proxy.connections).toBeGreaterThan(0);
    const lora = { r: 64, alpha: 64, target_modules: ALL_MODULES, dropout: 0, init_seed: 11 };

    // ---- A: killed mid-upload, restarted at once ---------------------------------------------
    // min_sites 2: round 1 can only complete with hospital-2's (resumed) update.
    // a deadline job 1 never reaches (its adapter's size, hence its paced upload, is learnt below)
    const job1 = await fed.submitJob({ lora, rounds: 3, min_sites: 2, max_sites: 2, round_deadline_s: fed.roundDeadlineS(20), round_retries: 0, train: TRAIN });
    const half = await halfUploaded(job1, 1, fed.clock.budgetMs(2));
    const uploadMs = Math.ceil((half.size / UPLINK_BYTES_PER_S) * 1000); // the whole paced upload
    await fed.kill(s2, 'SIGKILL');
    const tA = Date.now();
    expect(half.received_chunks).toBeGreaterThan(0);
    expect(half.received_chunks).toBeLessThan(chunksOf(half));
    expect(chunksOf(half)).toBeGreaterThanOrEqual(4); // several hundred KB in 64 KiB chunks
    // The killed agent had recorded the update before sending: pending, bytes on disk.
    const before = siteOutbox(1).find((e) => e.update_id === half.update_id);
    expect(before).toMatchObject({ state: 'pending' });
    expect(existsSync(before!.file)).toBe(true);

    proxy.throttled = false;
    s2 = fed.startSite(1, `127.0.0.1:${proxy.port}`);
    await fed.waitFor('round 1 published', 2, async () => ((await fed.rounds(job1)).find((r) => r.round === 1 && r.state === 'published') ? true : null));
    const r1 = fed.query<UpdateRow>(`SELECT * FROM updates WHERE job_id = ? AND round = 1 AND site_id = 'hospital-2'`, job1);
    // Resumed, not retrained: the one and only hospital-2 update of round 1 is the half-uploaded one.
    expect(r1.map((u) => [u.update_id, u.status])).toEqual([[half.update_id, 'accepted']]);
    expect(r1[0].received_chunks).toBe(chunksOf(half));
    // The site logs and commits the acknowledgement a moment after the coordinator committed it.
    const proc2 = s2;
    const uploaded = await fed.waitFor('hospital-2 logs the resumed upload', 1, () => {
      const l = logLines(proc2).filter((x) => x.msg === 'update uploaded' && x.update === half.update_id);
      return l.length ? l : null;
    });
    expect(uploaded).toHaveLength(1);
    // It continued from the chunks the coordinator had persisted (at least those seen before the kill).
    expect(uploaded[0].resumed_from_chunk as number).toBeGreaterThanOrEqual(half.received_chunks);
    expect(uploaded[0].resumed_from_chunk as number).toBeLessThanOrEqual(chunksOf(half));
    await fed.waitFor('the resumed update acknowledged in the site outbox', 1, () => (siteOutbox(1).find((e) => e.update_id === half.update_id)?.state === 'acknowledged' ? true : null));
    console.log(`[site-upload-kill] A: killed at chunk ${half.received_chunks}/${chunksOf(half)} (${half.size} B), resumed from chunk ${uploaded[0].resumed_from_chunk}, round 1 published ${((Date.now() - tA) / 1000).toFixed(1)} s after the kill`);

    // ---- B: killed right after its update was accepted ---------------------------------------
    const acc = await pollRow(`hospital-2's round-2 update accepted`, 2, 0, `SELECT * FROM updates WHERE job_id = ? AND round = 2 AND site_id = 'hospital-2' AND status = 'accepted'`, job1);
    await fed.kill(s2, 'SIGKILL');
    const stateAtKill = siteOutbox(1).find((e) => e.update_id === acc.update_id)?.state; // 'pending' (ack not yet seen/committed) or 'acknowledged': both must be fine
    expect(['pending', 'acknowledged']).toContain(stateAtKill);
    s2 = fed.startSite(1, `127.0.0.1:${proxy.port}`);
    const done1 = await jobDone(job1, 3); // a restart and round 3
    expect(done1.current_version).toBe(3);
    // No second update for that task, and the entry ends acknowledged (bytes gone).
    expect(fed.query<UpdateRow>(`SELECT * FROM updates WHERE task_id = ?`, acc.task_id).map((u) => [u.update_id, u.status])).toEqual([[acc.update_id, 'accepted']]);
    const entryB = siteOutbox(1).find((e) => e.update_id === acc.update_id)!;
    expect(entryB.state).toBe('acknowledged');
    expect(existsSync(entryB.file)).toBe(false);
    expect(siteOutbox(1).filter((e) => e.task_id === acc.task_id)).toHaveLength(1);
    // It takes part in the next round.
    expect(fed.query(`SELECT site_id FROM updates WHERE job_id = ? AND round = 3 AND status = 'accepted' ORDER BY site_id`, job1)).toEqual([{ site_id: 'hospital-1' }, { site_id: 'hospital-2' }]);
    expect(fed.query(`SELECT site_id FROM updates WHERE job_id = ? AND round = 2 AND status = 'accepted' ORDER BY site_id`, job1)).toEqual([{ site_id: 'hospital-1' }, { site_id: 'hospital-2' }]);
    assertClean(job1, 3);
    // The site audited each accepted update's egress exactly once.
    const egress = siteAudit(1, 'egress').filter((e) => e.details.what === 'adapter update').map((e) => e.details.update_id);
    expect(egress.filter((id) => id === half.update_id || id === acc.update_id).sort()).toEqual([half.update_id, acc.update_id].sort());
    console.log(`[site-upload-kill] B: killed with its accepted update ${stateAtKill} in the site outbox; job 1 done at ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    // ---- C: killed mid-upload, kept down until the round closes at its deadline ------------
    proxy.throttled = true;
    // a deadline with room for hospital-1's round and for hospital-2's paced upload to get half way
    const deadlineC = fed.roundDeadlineS(2) + Math.ceil(uploadMs / 1000);
    const job2 = await fed.submitJob({ lora, rounds: 2, min_sites: 1, max_sites: 2, round_deadline_s: deadlineC, round_retries: 0, train: TRAIN });
    const halfC = await halfUploaded(job2, 1, uploadMs);
    await fed.kill(s2, 'SIGKILL');
    expect(existsSync(halfC.path)).toBe(true);
    const r1c = await fed.waitFor('job 2 round 1 closed at its deadline', 1, async () => (await fed.rounds(job2)).find((r) => r.round === 1 && r.state === 'published') ?? null, deadlineC * 1000);
    expect(r1c.updates.filter((u) => u.status === 'accepted').map((u) => u.site)).toEqual(['hospital-1']);
    const discarded = fed.query<UpdateRow>(`SELECT * FROM updates WHERE update_id = ?`, halfC.update_id)[0];
    expect(discarded.status).toBe('discarded');
    expect(discarded.reason).toMatch(/round closed before the upload finished/);
    expect(existsSync(halfC.path)).toBe(false); // its .part is gone
    expect(readdirSync(join(halfC.path, '..')).filter((f) => f.endsWith('.part'))).toEqual([]);
    expect(siteOutbox(1).find((e) => e.update_id === halfC.update_id)?.state).toBe('pending'); // the site has not heard yet

    proxy.throttled = false;
    s2 = fed.startSite(1, `127.0.0.1:${proxy.port}`);
    const done2 = await jobDone(job2, 3, deadlineC * 1000); // a restart and round 2
    expect(done2.current_version).toBe(2);
    const entryC = siteOutbox(1).find((e) => e.update_id === halfC.update_id)!;
    expect(entryC.state).toBe('discarded');
    expect(entryC.reason).toMatch(/FEDLORA_ERR_ROUND_CLOSED/);
    expect(existsSync(entryC.file)).toBe(false);
    expect(siteAudit(1, 'update_discarded').map((e) => e.details.update_id)).toContain(halfC.update_id);
    // It rejoins: hospital-2's round-2 update is accepted; its discarded one never counted.
    expect(fed.query(`SELECT site_id FROM updates WHERE job_id = ? AND round = 2 AND status = 'accepted' ORDER BY site_id`, job2)).toEqual([{ site_id: 'hospital-1' }, { site_id: 'hospital-2' }]);
    const agg1 = fed.query<{ details: string }>(`SELECT details FROM audit_log WHERE action = 'aggregate' AND subject = ?`, `${job2}/r1a1`);
    expect(JSON.parse(agg1[0].details).updates.map((u: { site: string }) => u.site)).toEqual(['hospital-1']);
    assertClean(job2, 2);
    // Nothing is left in the site's outbox folder: every entry was acknowledged or discarded
    // (the last one a moment after the coordinator committed it).
    await fed.waitFor('no pending entry left in the site outbox', 1, () => (siteOutbox(1).some((e) => e.state === 'pending') ? null : true));
    expect(readdirSync(join(fed.sites[1].dir, 'outbox'))).toEqual([]);
    console.log(`[site-upload-kill] C: half upload (${halfC.received_chunks}/${chunksOf(halfC)} chunks) discarded at the deadline; total ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }, 2 * TEST_TIMEOUT_MS);
});
