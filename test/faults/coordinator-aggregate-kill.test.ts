// The coordinator SIGKILLed WHILE AGGREGATING, with real processes: the same jobs run in two
// federations set up identically (same seed, sites, data, model, job ids, DP noise key):
//   A: uninterrupted;
//   B: the coordinator is started with FEDLORA_FAILPOINTS (shared/failpoints.ts) so it stops
//      dead at an exact point of the aggregation, the test SIGKILLs it there and restarts it.
// Kill points, per job: round 1 and round 2 at the two failpoints, in both orders —
//   coordinator.aggregate.computed  (the new adapter computed, nothing written), and
//   coordinator.publish.written     (the version's files on disk, nothing committed).
// Jobs: DP-FedAvg with Gaussian noise and adaptive clipping (the noise and the clip-norm bit
// noise come from the coordinator's secret noise key, so a redo adds the same noise), and
// plain FedAvg.
// Asserted: every published adapter of B is bit-identical to A's (sha256 of the bytes), each
// version is published once, no round is restarted as a new attempt, the acknowledged updates
// are kept (same ids) and counted once, and B's audit log verifies after the crashes.
//
// The sites use the external-command trainer contract with a deterministic stand-in trainer
// (fixtures/deterministic-trainer.mjs): the comparison needs bit-identical site updates in
// both federations, which real ONNX Runtime training in two processes does not promise
// (threaded float reductions); the precondition (same accepted update sha256s) is asserted.
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, setupFederation, type Federation } from './harness.ts';
import { TEST_TIMEOUT_MS } from '../runner/limits.ts';
import type { WorkClock } from '../runner/work-clock.ts';
import type { FailpointName } from '../../shared/failpoints.ts';

const TRAINER = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'deterministic-trainer.mjs');
/** "For ever" for this test (the process is SIGKILLed while it waits): set from B's clock. */
let PAUSE_MS = 0;

let A: Federation;
let B: Federation;
const options = {
  sites: 2,
  seed: 23,
  sitePatch: (sc: any, name: string, clock: WorkClock) => {
    // the stand-in trainer is one node process: a timeout far beyond a `fedlora` command
    sc.trainer = { kind: 'command', command: [process.execPath, TRAINER, name], timeout_s: Math.ceil(clock.budgetMs(2) / 1000) };
  },
};

beforeAll(async () => {
  [A, B] = await Promise.all([setupFederation(options), setupFederation(options)]);
  PAUSE_MS = B.clock.budgetMs(20);
  // the same job specs in both federations: a round deadline neither reaches
  const roundDeadlineS = Math.max(A.roundDeadlineS(20), B.roundDeadlineS(20));
  for (const j of JOBS) Object.assign(j.patch, { round_deadline_s: roundDeadlineS });
  // B gets A's DP noise key, on a "secrets volume" named in its config (privacy.noise_key_file);
  // the coordinator reads the key at start, so B's is stopped, re-pointed and started again
  // (the first start with a failpoint happens per job below).
  await B.kill(B.coordinator(), 'SIGTERM');
  const vault = join(B.dir, 'vault');
  mkdirSync(vault, { mode: 0o700 });
  copyFileSync(join(A.coordDir, 'secrets', 'dp-noise.key'), join(vault, 'dp-noise.key'));
  const cfgFile = join(B.coordDir, 'coordinator.yaml');
  const cfg = YAML.parse(readFileSync(cfgFile, 'utf8'));
  cfg.privacy = { noise_key_file: join(vault, 'dp-noise.key') };
  writeFileSync(cfgFile, YAML.stringify(cfg));
  // B's sites connect once B's coordinator is up again (its rounds wait for min_sites online).
  for (const f of [A, B]) for (let i = 0; i < f.sites.length; i++) f.startSite(i);
  await A.waitFor('A: both sites online', 2, async () => {
    const r = await A.api<{ sites: { online?: boolean }[] }>('/api/sites');
    return r.sites.filter((s) => s.online).length === 2 ? true : null;
  });
});
afterAll(async () => {
  await Promise.all([A?.stopAll(), B?.stopAll()]);
});

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
type Upd = { update_id: string; round: number; attempt: number; site_id: string; status: string; sha256: string };
type Ver = { version: number; sha256: string; path: string };

const base = { rounds: 2, min_sites: 2, max_sites: 2, round_retries: 2, selection_seed: 5 }; // + round_deadline_s (beforeAll)
const JOBS = [
  {
    id: 'dp-fedavg.kill-1',
    dp: true,
    patch: { ...base, privacy: { dp: { clip_norm: 0.1, noise_multiplier: 1, delta: 1e-5, epsilon_budget: 1000, adaptive_clipping: true } } },
    kills: ['coordinator.aggregate.computed', 'coordinator.publish.written'] as FailpointName[],
  },
  {
    id: 'fedavg.kill-2',
    dp: false,
    patch: { ...base, aggregation: { name: 'fedavg' } },
    kills: ['coordinator.publish.written', 'coordinator.aggregate.computed'] as FailpointName[],
  },
];

/** The job's two rounds (each: the sites' stand-in training, uploads, aggregation) complete. */
async function completed(f: Federation, jobId: string) {
  return f.waitFor(`job ${jobId} completed`, 2 * 2, async () => {
    const j = await f.api<{ status: string; current_version: number; error: string | null }>(`/api/jobs/${jobId}`);
    if (j.status === 'failed') throw new Error(`job failed: ${j.error}`);
    return j.status === 'completed' ? j : null;
  });
}

const logOf = (f: Federation) => join(f.dir, 'logs', 'coordinator.log');
const logSize = (f: Federation) => (existsSync(logOf(f)) ? statSync(logOf(f)).size : 0);

/** Start B's coordinator with `failpoints`, wait until it pauses at `point` in `round` (the
 *  stderr line of the failpoint AND the round 'aggregating' in SQLite), and return. */
async function pausedAt(jobId: string, failpoints: string, point: FailpointName, round: number, submit?: () => Promise<unknown>) {
  const from = logSize(B);
  await B.startCoordinator({ env: { FEDLORA_FAILPOINTS: failpoints } });
  await submit?.();
  // a coordinator start, then the rounds up to the paused aggregation
  await B.waitFor(`B paused at ${point} in round ${round}`, 1 + 2 * round, () => {
    const line = readFileSync(logOf(B)).subarray(from).toString('utf8').includes(`fedlora failpoint ${point} reached: pause(${PAUSE_MS})`);
    const r = B.query<{ state: string }>(`SELECT state FROM rounds WHERE job_id = ? AND round = ?`, jobId, round);
    return line && r.length === 1 && r[0].state === 'aggregating' ? true : null;
  });
}

describe('fault: coordinator SIGKILLed while aggregating', () => {
  it('restarts, redoes the round and publishes adapters bit-identical to an uninterrupted run', async () => {
    // A: the reference runs, one job after the other, concurrently with B's interrupted ones.
    const refs: Record<string, Promise<Ver[]>> = {};
    const aDone = (async () => {
      for (const j of JOBS) {
        refs[j.id] = (async () => {
          await A.submitJob(j.patch, { id: j.id });
          await completed(A, j.id);
          return A.query<Ver>(`SELECT version, sha256, path FROM adapter_versions WHERE job_id = ? ORDER BY version`, j.id);
        })();
        await refs[j.id];
      }
    })();

    for (const j of JOBS) {
      const [k1, k2] = j.kills;
      // 1st start: pauses at k1 in round 1 → SIGKILL.
      await pausedAt(j.id, `${k1}=pause(${PAUSE_MS})`, k1, 1, () => B.submitJob(j.patch, { id: j.id }));
      const acked1 = B.query<Upd>(`SELECT * FROM updates WHERE job_id = ? AND round = 1 AND status = 'accepted' ORDER BY site_id`, j.id);
      expect(acked1.map((u) => u.site_id)).toEqual(['hospital-1', 'hospital-2']);
      expect(B.query(`SELECT version FROM adapter_versions WHERE job_id = ? AND version = 1`, j.id)).toEqual([]);
      await B.kill(B.coordinator(), 'SIGKILL');

      // 2nd start: the redo of round 1 passes k2 once (1*off), round 2 pauses at k2 → SIGKILL.
      await pausedAt(j.id, `${k2}=1*off->pause(${PAUSE_MS})`, k2, 2);
      const acked2 = B.query<Upd>(`SELECT * FROM updates WHERE job_id = ? AND round = 2 AND status = 'accepted' ORDER BY site_id`, j.id);
      expect(acked2.map((u) => u.site_id)).toEqual(['hospital-1', 'hospital-2']);
      // round 1 was redone and published once from the SAME acknowledged updates
      expect(B.query(`SELECT update_id FROM updates WHERE job_id = ? AND round = 1 AND status = 'accepted' ORDER BY site_id`, j.id))
        .toEqual(acked1.map((u) => ({ update_id: u.update_id })));
      if (k2 === 'coordinator.publish.written') {
        // files written (A's very bytes, content-addressed), but no version row: nothing visible yet
        const ref = (await refs[j.id]).find((v) => v.version === 2)!;
        expect(existsSync(join(B.coordDir, 'adapters', ref.sha256, 'adapter_model.safetensors'))).toBe(true);
      }
      expect(B.query(`SELECT version FROM adapter_versions WHERE job_id = ? AND version = 2`, j.id)).toEqual([]);
      await B.kill(B.coordinator(), 'SIGKILL');

      // 3rd start, no failpoints: the redo of round 2 completes the job.
      await B.startCoordinator();
      const job = await completed(B, j.id);
      expect(job.current_version).toBe(2);
      await B.kill(B.coordinator(), 'SIGTERM'); // the next job starts it with its failpoints

      // ---- B against A ---------------------------------------------------------------------
      const aVers = await refs[j.id];
      const bVers = B.query<Ver>(`SELECT version, sha256, path FROM adapter_versions WHERE job_id = ? ORDER BY version`, j.id);
      expect(bVers.map((v) => v.version)).toEqual([0, 1, 2]); // each version published once
      for (const [k, v] of bVers.entries()) {
        const bBytes = sha256(readFileSync(join(v.path, 'adapter_model.safetensors')));
        const aBytes = sha256(readFileSync(join(aVers[k].path, 'adapter_model.safetensors')));
        expect(bBytes, `${j.id} v${v.version}`).toBe(aBytes); // bit-identical
        expect(v.sha256).toBe(aVers[k].sha256);
      }
      // precondition: both federations aggregated the same site updates (bit for bit)
      const updSql = `SELECT * FROM updates WHERE job_id = ? ORDER BY round, site_id`;
      const key = (u: Upd) => `r${u.round}a${u.attempt}/${u.site_id}/${u.status}/${u.sha256}`;
      expect(B.query<Upd>(updSql, j.id).map(key)).toEqual(A.query<Upd>(updSql, j.id).map(key));
      // the acknowledged updates were kept (same ids) and nothing else was received
      expect(B.query<Upd>(updSql, j.id).map((u) => u.update_id)).toEqual([...acked1, ...acked2].map((u) => u.update_id));
      // no round restarted as a new attempt
      expect(B.query(`SELECT round, attempt, state FROM rounds WHERE job_id = ? ORDER BY round, attempt`, j.id))
        .toEqual([{ round: 1, attempt: 1, state: 'published' }, { round: 2, attempt: 1, state: 'published' }]);
      // nothing double counted: one aggregate entry per round, over exactly the kept updates
      const audit = (action: string) => B.query<{ subject: string; details: string }>(`SELECT subject, details FROM audit_log WHERE action = ? AND subject LIKE ? ORDER BY seq`, action, `${j.id}/%`);
      const aggs = audit('aggregate').map((e) => JSON.parse(e.details) as { round: number; contributing_sites: number; updates: { update_id: string }[]; metrics: Record<string, number> });
      expect(aggs.map((a) => [a.round, a.contributing_sites, a.updates.map((u) => u.update_id)]))
        .toEqual([[1, 2, acked1.map((u) => u.update_id)], [2, 2, acked2.map((u) => u.update_id)]]);
      expect(audit('publish').map((e) => e.subject)).toEqual([`${j.id}/v0`, `${j.id}/v1`, `${j.id}/v2`]);
      const metricsOf = (f: Federation) => f.query<{ metrics_json: string }>(`SELECT metrics_json FROM rounds WHERE job_id = ? ORDER BY round`, j.id).map((r) => r.metrics_json);
      expect(metricsOf(B)).toEqual(metricsOf(A));
      if (j.dp) {
        // real noise was added (so equality above means the keyed noise was reproduced) …
        for (const a of aggs) expect(a.metrics.dp_noise_std).toBeGreaterThan(0);
        // … and it is not reproducible without the key: B's own key (made at init) differs
        expect(readFileSync(join(B.coordDir, 'secrets', 'dp-noise.key'))).not.toEqual(readFileSync(join(A.coordDir, 'secrets', 'dp-noise.key')));
        expect(B.query(`SELECT round FROM privacy_ledger WHERE job_id = ? ORDER BY round`, j.id)).toEqual([{ round: 1 }, { round: 2 }]);
        expect(B.query(`SELECT subject FROM audit_log WHERE action = 'privacy_spend' AND subject = ?`, j.id)).toHaveLength(2);
      }
    }
    await aDone;

    // the key stays a secret file on the coordinator
    const keyFile = join(A.coordDir, 'secrets', 'dp-noise.key');
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    expect(statSync(keyFile).size).toBe(32);
    // B's tamper-evident audit log verifies after the four SIGKILLs
    const v = JSON.parse(await cli(['audit', 'verify', '--data-dir', B.coordDir, '--json'])) as { ok: boolean; entries: number };
    expect(v.ok).toBe(true);
    expect(v.entries).toBeGreaterThan(10);
  }, 2 * TEST_TIMEOUT_MS);
});
