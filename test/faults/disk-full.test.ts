// Disk full on the coordinator while an update arrives. An honest ENOSPC without root: the spool
// file of the incoming update is a symlink to /dev/full (every write fails with ENOSPC, as on a
// full file system). The chunk is refused with FEDLORA_ERR_DISK_FULL, no progress is committed,
// the update already accepted is untouched, and once space is back the same upload resumes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { admitUpdate, appendChunk, submitUpdateBytes } from '../../coordinator/rounds/intake.ts';
import { harness, online, tinySpec, fakeDelta, encodeDelta, rmDir, type Harness } from '../coordinator/helpers.ts';

let h: Harness;
beforeAll(() => {
  h = harness();
});
afterAll(() => {
  h?.close();
  if (h) rmDir(h.dir);
});

describe('fault: coordinator disk full while receiving an update', () => {
  it('refuses the chunk with FEDLORA_ERR_DISK_FULL, keeps stored updates intact, resumes later', async () => {
    expect(existsSync('/dev/full')).toBe(true);
    online(h, 's1', 's2');
    const jobId = await h.engine.submitJob(tinySpec({ min_sites: 2, max_sites: 2 }), 'disk-job');
    await h.engine.tick();
    const { layout } = h.engine.jobInfo(jobId);
    const task = (s: string) => h.store.openTasksFor(s).find((t) => t.job_id === jobId)!;

    // s1's update is stored and accepted first.
    const b1 = encodeDelta(layout.update, fakeDelta(layout.update, 's1', 1));
    const u1 = await submitUpdateBytes(h.engine, 's1', { updateId: 'u-s1', taskId: task('s1').task_id, jobId, round: 1, baseVersion: 0, numExamples: 4 }, b1);
    expect(u1.status).toBe('accepted');
    const u1Bytes = readFileSync(u1.path);

    // s2's spool file lands on a "full disk".
    const b2 = encodeDelta(layout.update, fakeDelta(layout.update, 's2', 1));
    const hdr = { updateId: 'u-s2', taskId: task('s2').task_id, jobId, round: 1, baseVersion: 0, numExamples: 4 };
    const spool = join(h.dir, 'updates', jobId, 'r1a1', 'u-s2.part');
    mkdirSync(join(h.dir, 'updates', jobId, 'r1a1'), { recursive: true });
    symlinkSync('/dev/full', spool);
    const sha = createHash('sha256').update(b2).digest('hex');
    const { row } = admitUpdate(h.engine, 's2', { ...hdr, totalBytes: b2.length, sha256: sha, chunkSize: 1024 }, 1 << 20);
    const chunk = b2.subarray(0, 1024);
    let err: unknown;
    try {
      await appendChunk(h.engine, row.update_id, { index: 0, offset: 0, data: chunk, sha256: createHash('sha256').update(chunk).digest('hex') });
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'FEDLORA_ERR_DISK_FULL' });
    expect((err as Error).message).toMatch(/u-s2.*no space left/);

    // Nothing committed for s2; s1's accepted update untouched on disk and in SQLite.
    expect(h.store.update('u-s2')).toMatchObject({ status: 'receiving', received_chunks: 0, received_bytes: 0 });
    expect(h.store.update('u-s1')).toMatchObject({ status: 'accepted', sha256: u1.sha256 });
    expect(readFileSync(u1.path).equals(u1Bytes)).toBe(true);
    expect(h.store.db.prepare(`PRAGMA integrity_check`).get()).toEqual({ integrity_check: 'ok' });

    // Space is back (the symlink goes): the same update id resumes and is accepted exactly once.
    rmSync(spool);
    const u2 = await submitUpdateBytes(h.engine, 's2', hdr, b2, { chunkSize: 1024 });
    expect(u2.status).toBe('accepted');
    expect(createHash('sha256').update(readFileSync(u2.path)).digest('hex')).toBe(sha);
    const accepted = h.store.db.prepare(`SELECT site_id FROM updates WHERE job_id = ? AND status = 'accepted' ORDER BY site_id`).all(jobId);
    expect(accepted).toEqual([{ site_id: 's1' }, { site_id: 's2' }]);
  });
});
