// A round that leaves 'open' while an update is still arriving: the half-received update is
// set 'discarded' (round closed before the upload finished), its .part file is deleted, the
// site is told FEDLORA_ERR_ROUND_CLOSED when it resumes, and aggregation uses accepted rows only.
// Real SQLite, fake clock, no gRPC (coordinator/rounds/plain-collector.ts check, intake.ts).
import { afterEach, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { admitUpdate, appendChunk, finishUpdate, submitUpdateBytes } from '../../coordinator/rounds/intake.ts';
import { harness, online, tinySpec, fakeDelta, encodeDelta, rmDir, type Harness } from './helpers.ts';

const dirs: string[] = [];
afterEach(() => {
  while (dirs.length) rmDir(dirs.pop()!);
});

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const CHUNK = 512;

async function start(h: Harness, over: Record<string, unknown>) {
  online(h, 's1', 's2');
  const jobId = await h.engine.submitJob(tinySpec({ max_sites: 2, ...over }));
  await h.engine.tick();
  const { layout } = h.engine.jobInfo(jobId);
  const task = (s: string) => h.store.openTasksFor(s).find((t) => t.job_id === jobId)!;
  const bytes = (s: string) => encodeDelta(layout.update, fakeDelta(layout.update, s, 1));
  /** s2 sends its header and `n` chunks (default: all), then goes silent (killed mid-upload). */
  const half = async (chunks?: number) => {
    const b = bytes('s2');
    const n = chunks ?? Math.ceil(b.length / CHUNK);
    const hdr = { updateId: 'u-s2', taskId: task('s2').task_id, jobId, round: 1, baseVersion: 0, numExamples: 3, totalBytes: b.length, sha256: sha(b), chunkSize: CHUNK };
    const { row } = admitUpdate(h.engine, 's2', hdr, 1 << 20);
    for (let i = 0; i < n; i++) {
      const data = b.subarray(i * CHUNK, Math.min(b.length, (i + 1) * CHUNK));
      await appendChunk(h.engine, 'u-s2', { index: i, offset: i * CHUNK, data, sha256: sha(data) });
    }
    return { row, hdr, b };
  };
  return { jobId, task, bytes, half };
}

describe('an upload still arriving when its round closes', () => {
  it('is discarded with its .part when the round aggregates at the deadline; resuming it answers ROUND_CLOSED', async () => {
    const h = harness();
    dirs.push(h.dir);
    const { jobId, task, bytes, half } = await start(h, { min_sites: 1 });
    const s1 = await submitUpdateBytes(h.engine, 's1', { updateId: 'u-s1', taskId: task('s1').task_id, jobId, round: 1, baseVersion: 0, numExamples: 5 }, bytes('s1'), { chunkSize: CHUNK });
    expect(s1.status).toBe('accepted');
    const { row, hdr, b } = await half(2);
    expect(b.length).toBeGreaterThan(3 * CHUNK);
    expect(h.store.update('u-s2')).toMatchObject({ status: 'receiving', received_chunks: 2 });
    expect(existsSync(row.path)).toBe(true);

    await h.engine.tick();
    expect(h.store.currentRound(jobId)!.state).toBe('open'); // s2 still has time
    h.clock.t += 61_000;
    await h.engine.tick();

    expect(h.store.update('u-s2')).toMatchObject({ status: 'discarded', reason: 'round closed before the upload finished', received_chunks: 2 });
    expect(existsSync(row.path)).toBe(false);
    const agg = h.store.audit.list({ action: 'aggregate' });
    expect(agg).toHaveLength(1);
    expect((agg[0].details.updates as { update_id: string }[]).map((u) => u.update_id)).toEqual(['u-s1']);
    expect(h.store.audit.list({ action: 'update_rejected' }).filter((e) => e.subject === 'u-s2').map((e) => e.details.code)).toEqual(['FEDLORA_ERR_ROUND_CLOSED']);
    // The site resumes it after a restart: told the round closed, nothing stored.
    expect(() => admitUpdate(h.engine, 's2', { ...hdr }, 1 << 20)).toThrow(/FEDLORA_ERR_ROUND_CLOSED|discarded/);
    const data = b.subarray(2 * CHUNK, 3 * CHUNK);
    await expect(appendChunk(h.engine, 'u-s2', { index: 2, offset: 2 * CHUNK, data, sha256: sha(data) })).rejects.toMatchObject({ code: 'FEDLORA_ERR_ROUND_CLOSED' });
    expect(existsSync(row.path)).toBe(false);
  });

  it('is discarded with its .part when the round attempt fails', async () => {
    const h = harness();
    dirs.push(h.dir);
    const { jobId, half } = await start(h, { min_sites: 2, round_retries: 0 });
    const { row } = await half(1);
    h.clock.t += 61_000;
    await h.engine.tick();
    expect(h.store.rounds(jobId)[0].state).toBe('failed');
    expect(h.store.update('u-s2')).toMatchObject({ status: 'discarded', reason: 'round closed before the upload finished' });
    expect(existsSync(row.path)).toBe(false);
  });

  it('a round closing while the last bytes are being verified: refused with ROUND_CLOSED, never accepted', async () => {
    const h = harness();
    dirs.push(h.dir);
    const { half } = await start(h, { min_sites: 1 });
    const { row, b } = await half();
    expect(h.store.update('u-s2')!.received_bytes).toBe(b.length);
    const finishing = finishUpdate(h.engine, 'u-s2');
    // What checkCollection does when the deadline passes meanwhile (the hash runs on the thread pool).
    h.store.setUpdateStatus('u-s2', 'discarded', 'round closed before the upload finished');
    rmSync(row.path, { force: true });
    await expect(finishing).rejects.toMatchObject({ code: 'FEDLORA_ERR_ROUND_CLOSED' });
    expect(h.store.update('u-s2')!.status).toBe('discarded');
  });
});
