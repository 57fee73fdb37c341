// Property-based fuzzing of the coordinator's upload intake (admitUpdate → appendChunk →
// finishUpdate, what the gRPC UploadUpdate handler drives), in-process on a real SQLite store:
// random sequences of headers (wrong task/job/round/base version, hostile sizes and ids),
// chunks (out of order, wrong hashes, oversize, unknown update ids) and finishes, mixed with
// well-formed and malformed safetensors (NaN/Inf, wrong names/shapes/dtypes). Every operation
// either succeeds or throws a FedloraError; a site never has two accepted updates in a round;
// an accepted update's stored file has its announced sha256 and validates against the layout.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ERRORS, isFedloraError } from '../../shared/errors.ts';
import { encodeSafetensors } from '../../shared/safetensors.ts';
import { admitUpdate, appendChunk, finishUpdate, submitUpdateBytes } from '../../coordinator/rounds/intake.ts';
import { validateUpdateBytes } from '../../coordinator/rounds/validate-update.ts';
import { harness, online, tinySpec, fakeDelta, encodeDelta, rmDir, type Harness } from '../coordinator/helpers.ts';

const RUNS = Number(process.env.FEDLORA_FUZZ_RUNS ?? 1500);
let h: Harness;
let jobId: string;

beforeAll(async () => {
  h = harness();
  online(h, 's1', 's2');
  jobId = await h.engine.submitJob(tinySpec({ min_sites: 2, max_sites: 2 }), 'fuzz-job');
  await h.engine.tick();
});
afterAll(() => {
  h?.close();
  if (h) rmDir(h.dir);
});

async function clear<T>(fn: () => T | Promise<T>): Promise<T | undefined> {
  try {
    return await fn();
  } catch (e) {
    if (!isFedloraError(e)) throw new Error(`non-FedloraError from intake: ${(e as Error)?.stack ?? String(e)}`);
    expect(e.code in ERRORS).toBe(true);
    return undefined;
  }
}


describe('fuzz: update intake', () => {
  it('random header/chunk/finish sequences never crash, never double count, never store a bad accepted update', async () => {
    const tasks = h.store.openTasksFor('s1').concat(h.store.openTasksFor('s2')).filter((t) => t.job_id === jobId);
    expect(tasks.length).toBe(2);
    const { layout } = h.engine.jobInfo(jobId);
    const good = (site: string) => encodeDelta(layout.update, fakeDelta(layout.update, site, 1));
    const bad = (kind: number): Buffer => {
      const flat = fakeDelta(layout.update, 'x', 1);
      if (kind === 0) flat[3] = NaN;
      if (kind === 1) flat[0] = Infinity;
      const e = layout.update.entries;
      if (kind === 2) return encodeSafetensors({ wrong_name: { dtype: 'F32', shape: [2], data: new Float32Array(2) } });
      if (kind === 3) return encodeSafetensors({ [e[0].name]: { dtype: 'F16', shape: e[0].shape, data: new Float32Array(e[0].length) } });
      if (kind === 4) return Buffer.from('not safetensors at all');
      return encodeDelta(layout.update, flat);
    };
    let seq = 0;
    const op = fc.record({
      site: fc.constantFrom('s1', 's2', 'intruder'),
      taskIdx: fc.constantFrom(0, 1, 2),
      payload: fc.constantFrom('good', 'good', 'bad0', 'bad1', 'bad2', 'bad3', 'bad4'),
      idKind: fc.constantFrom('fresh', 'fresh', 'reuse', 'hostile'),
      hostileId: fc.string({ maxLength: 80 }),
      roundDelta: fc.constantFrom(0, 0, 0, 1, -1),
      baseDelta: fc.constantFrom(0, 0, 0, 1),
      totalDelta: fc.constantFrom(0, 0, 0, 1, -1, 1e12, Number.NaN),
      chunkSize: fc.constantFrom(64, 512, 1 << 20, 0, -1, 1 << 30),
      examples: fc.constantFrom(4, 1, 0, -3, Number.NaN),
      chunkEdits: fc.array(fc.constantFrom('skip', 'swap', 'badhash', 'grow', 'ok', 'ok', 'ok'), { maxLength: 4 }),
      finish: fc.boolean(),
    });
    const used: string[] = [];
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 6 }), async (ops) => {
        for (const o of ops) {
          const task = tasks[o.taskIdx];
          const bytes = o.payload === 'good' ? good(o.site) : bad(Number(o.payload.slice(3)));
          const updateId = o.idKind === 'reuse' && used.length ? used[seq % used.length] : o.idKind === 'hostile' ? o.hostileId : `fz-${++seq}`;
          if (o.idKind === 'fresh') used.push(updateId);
          const sha = createHash('sha256').update(bytes).digest('hex');
          const admitted = await clear(() =>
            admitUpdate(h.engine, o.site, {
              updateId, taskId: task ? task.task_id : 'no-such-task', jobId, round: 1 + o.roundDelta, baseVersion: o.baseDelta,
              totalBytes: bytes.length + o.totalDelta, sha256: sha, chunkSize: o.chunkSize, numExamples: o.examples,
            }, 1 << 20),
          );
          // chunks, possibly mangled; also against an update id the intake never admitted
          const target = admitted ? admitted.row.update_id : `ghost-${seq}`;
          const cs = admitted?.row.chunk_size ?? 512;
          let off = admitted?.row.received_bytes ?? 0;
          let idx = admitted?.row.received_chunks ?? 0;
          for (const edit of o.chunkEdits.length ? o.chunkEdits : ['ok']) {
            if (off >= bytes.length) break;
            let data = bytes.subarray(off, Math.min(off + cs, bytes.length));
            let sum = createHash('sha256').update(data).digest('hex');
            let i = idx;
            let at = off;
            if (edit === 'skip') (i += 1), (at += data.length);
            if (edit === 'swap') i = Math.max(0, idx - 1);
            if (edit === 'badhash') sum = '0'.repeat(64);
            if (edit === 'grow') (data = Buffer.concat([data, Buffer.alloc(cs)])), (sum = createHash('sha256').update(data).digest('hex'));
            const r = await clear(() => appendChunk(h.engine, target, { index: i, offset: at, data, sha256: sum }));
            if (r) (off = r.received_bytes), (idx = r.received_chunks);
          }
          if (o.finish) await clear(() => finishUpdate(h.engine, target));
        }
        // invariants after each sequence
        const dup = h.store.db.prepare(`SELECT site_id, round, attempt FROM updates WHERE status = 'accepted' GROUP BY site_id, round, attempt HAVING COUNT(*) > 1`).all();
        expect(dup).toEqual([]);
        for (const u of h.store.db.prepare(`SELECT * FROM updates WHERE status = 'accepted'`).all() as { path: string; sha256: string; site_id: string }[]) {
          const buf = readFileSync(u.path);
          expect(createHash('sha256').update(buf).digest('hex')).toBe(u.sha256);
          expect(() => validateUpdateBytes(buf, layout.update, u.path)).not.toThrow();
          expect(['s1', 's2']).toContain(u.site_id);
        }
      }),
      { numRuns: RUNS },
    );
    // After all that abuse the intake still works: each site's clean upload (fresh id) is
    // accepted, or was already accepted once by the fuzzer — and exactly once per site.
    for (const [i, site] of ['s1', 's2'].entries()) {
      const have = h.store.db.prepare(`SELECT COUNT(*) AS n FROM updates WHERE site_id = ? AND status = 'accepted'`).get(site) as { n: number };
      if (have.n > 0) continue;
      const task = tasks.find((t) => t.site_id === site)!;
      const u = await submitUpdateBytes(h.engine, site, { updateId: `clean-${i}`, taskId: task.task_id, jobId, round: 1, baseVersion: 0, numExamples: 4 }, good(site));
      expect(u.status).toBe('accepted');
    }
    const per = h.store.db.prepare(`SELECT site_id, COUNT(*) AS n FROM updates WHERE status = 'accepted' GROUP BY site_id ORDER BY site_id`).all();
    expect(per).toEqual([{ site_id: 's1', n: 1 }, { site_id: 's2', n: 1 }]);
  });
});
