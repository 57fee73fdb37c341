// Secure aggregation through the real coordinator: 4 enrolled sites over mutual TLS run
// runSecAggSite with known deltas; the published version is the plain uniform FedAvg of the
// deltas (within quantisation error), and nothing the coordinator stores correlates with any
// single site's delta (while the round runs, and nothing of it is left afterwards).
import { describe, it, expect, afterAll } from 'vitest';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { runSecAggSite, secAggInput } from '../../site-agent/agent/secagg-client.ts';
import { quantize } from '../../shared/secagg/quantize.ts';
import { EXAMPLES_CAP, type SecAggRoundConfig } from '../../shared/secagg/messages.ts';
import { barrier, correlation, maxAbsDiff, randomDelta, secAggSpec, startFederation, versionFlat, waitOpen, type Federation } from './helpers.ts';
import { TEST_TIMEOUT_MS, SLOWDOWN } from '../runner/limits.ts';

const feds: Federation[] = [];
afterAll(async () => {
  for (const f of feds) await f.close();
});

/** Every stored value big enough to hold a vector: table -> values. */
function bigStoredValues(fed: Federation): Map<string, Array<Buffer | string>> {
  const db = fed.coord.store.db;
  const out = new Map<string, Array<Buffer | string>>();
  const tables = db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table'`).all() as Array<{ name: string }>;
  for (const { name } of tables) {
    for (const row of db.prepare(`SELECT * FROM "${name}"`).all() as Array<Record<string, unknown>>) {
      for (const v of Object.values(row)) {
        if ((Buffer.isBuffer(v) && v.length >= 1024) || (typeof v === 'string' && v.length >= 4096)) {
          if (!out.has(name)) out.set(name, []);
          out.get(name)!.push(v as Buffer | string);
        }
      }
    }
  }
  return out;
}

describe('secure aggregation over the real federation', () => {
  it('4 sites: version 1 = version 0 + uniform mean of the deltas; stored data reveals no single delta', async () => {
    const ids = ['site-a', 'site-b', 'site-c', 'site-d'];
    const fed = await startFederation(ids);
    feds.push(fed);
    fed.coord.engine.secagg.options.chunkElems = 1000; // several masked chunks per site
    await fed.coord.engine.submitJob(secAggSpec(), 'job-sa');
    await waitOpen(() => fed.coord, 'job-sa', 1);
    const { layout } = fed.coord.engine.jobInfo('job-sa');
    expect(layout.update.total).toBe(3584);
    const deltas = new Map(ids.map((id, k) => [id, randomDelta(layout.update.total, 11 + k, 0.05)]));
    const examples = [10, 20, 30, 45];

    // Hold every site at its first `unmask` call until all four got there: the masked stage is
    // then closed with all inputs stored, and the unmask shares not yet sent.
    const atUnmask = barrier(ids.length);
    let snapshot: Map<string, Array<Buffer | string>> | undefined;
    let cfg: SecAggRoundConfig | undefined;
    const runs = fed.sites.map((s, k) => runSecAggSite({
      secAgg: async (m) => {
        if (m.stage === 'unmask' && !JSON.parse(m.payload.toString()).msg) {
          await atUnmask.arrive();
          snapshot ??= bigStoredValues(fed);
        }
        const r = await s.wire.secAgg(m);
        if (m.stage === 'config') cfg = JSON.parse(r.payload.toString());
        return r;
      },
    }, { jobId: 'job-sa', round: 1, siteId: s.id, update: deltas.get(s.id)!, numExamples: examples[k], pollMs: 50, deadlineUnixMs: Date.now() + 30_000 * SLOWDOWN }));
    const results = await Promise.all(runs);
    expect(results.map((r) => r.survivors)).toEqual(ids.map(() => ids));
    expect(results[0]).toMatchObject({ threshold: 3, dim: 3586, dropped: [], l2Clipped: false, clippedCoordinates: 0 });

    const job = await fed.coord.engine.waitForJob('job-sa', 20_000 * SLOWDOWN);
    expect(job.status).toBe('completed');
    const v0 = versionFlat(fed.coord, 'job-sa', 0);
    const v1 = versionFlat(fed.coord, 'job-sa', 1);
    const expected = v0.map((x, i) => x + ids.reduce((a, id) => a + deltas.get(id)![i], 0) / ids.length);
    // quantisation: each site's step is 2c/L with L = floor((2^32-1)/4), c = 1 (plus float32 rounding)
    expect(maxAbsDiff(v1, expected)).toBeLessThan(1e-6);
    expect(maxAbsDiff(v1, v0)).toBeGreaterThan(0.01); // the round did move the adapter
    const manifest = JSON.parse(fed.coord.store.adapterVersion('job-sa', 1)!.manifest_json);
    expect(manifest).toMatchObject({ version: 1, contributing_sites: 4, num_examples: 105 });
    expect(JSON.parse(fed.coord.store.rounds('job-sa')[0].metrics_json!)).toMatchObject({ secagg_survivors: 4 });

    // What the coordinator stored while the round ran: only the masked vectors are vector-sized.
    expect(snapshot).toBeDefined();
    expect([...snapshot!.keys()]).toEqual(['secagg_masked_chunks']);
    const stored = snapshot!.get('secagg_masked_chunks')! as Buffer[];
    expect(stored.length).toBe(4 * Math.ceil(3586 / 1000));
    // Each stored chunk against every chunk-aligned window of every site's input (|corr| ~ N(0, 1/len)).
    const inputs = ids.map((id) => secAggInput(deltas.get(id)!, cfg!, examples[ids.indexOf(id)]).x);
    for (const b of stored) {
      const y = new Uint32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
      const bound = 6 / Math.sqrt(y.length);
      for (const x of inputs) {
        for (let off = 0; off + y.length <= x.length; off += 1000) {
          expect(Math.abs(correlation(Array.from(y, Number), x.subarray(off, off + y.length)))).toBeLessThan(bound);
        }
      }
    }
    // the detector does detect an unmasked (quantised) input
    const q = quantize(inputs[0], 1, 4);
    expect(correlation(Array.from(q.subarray(0, 1000), Number), inputs[0].subarray(0, 1000))).toBeGreaterThan(0.99);
    expect(EXAMPLES_CAP).toBeGreaterThan(45);

    // After publication the round's stage data is purged; no update files were ever written.
    expect(fed.coord.store.db.prepare('SELECT COUNT(*) AS n FROM secagg_masked_chunks').get()).toEqual({ n: 0 });
    expect(fed.coord.store.db.prepare('SELECT COUNT(*) AS n FROM secagg_messages').get()).toEqual({ n: 0 });
    expect(bigStoredValues(fed).size).toBe(0);
    const upd = join(fed.dataDir, 'updates');
    expect(existsSync(upd) ? readdirSync(upd) : []).toEqual([]);
    expect(fed.coord.store.roundUpdates('job-sa', 1, 1)).toEqual([]);
  }, TEST_TIMEOUT_MS);
});
