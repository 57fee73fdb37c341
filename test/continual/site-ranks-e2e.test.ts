// Sites with different LoRA ranks over the real federation (the demo: a coordinator and three
// hospital agents as separate processes, mutual-TLS gRPC, a tiny model trained by the engine):
// the job trains rank 32 with aggregation svd and lora.min_site_r 8; hospital-2's policy allows
// at most rank 8 (smaller hardware), hospital-3's at most 4. Over two rounds hospital-1 sends
// rank-32 factors, hospital-2 rank-8 factors (each round from the published adapter
// re-compressed to rank 8 at the site), hospital-3 declines with its reason; each round publishes
// a rank-32 adapter aggregated from the two.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runDemo, DEMO_DEFAULTS, DEMO_LORA_RANK, type DemoResult } from '../../cli/demo/run-demo.ts';
import { openCoordinatorDb } from '../../coordinator/store/migrations.ts';
import { parseSafetensorsHeader } from '../../shared/safetensors.ts';
import { TEST_TIMEOUT_MS } from '../runner/limits.ts';

const SMALL = 8, TOO_SMALL = 4, ROUNDS = 2;
let demo: DemoResult;
const out = join(mkdtempSync(join(tmpdir(), 'fedlora-ranks-e2e-')), 'o');

beforeAll(async () => {
  demo = await runDemo({
    ...DEMO_DEFAULTS, sites: 3, rounds: ROUNDS, records: 60, localSteps: 2, aggregation: 'svd', crossEval: false, assistant: false, localBaseline: false,
    smallSite: null, sharedPerDiagnosis: 0, continuation: null, personalSteps: 0,
    siteRanks: { minSiteR: SMALL, maxLoraRank: { 'hospital-2': SMALL, 'hospital-3': TOO_SMALL } }, out, log: () => {},
  });
}, 12.5 * TEST_TIMEOUT_MS);
afterAll(async () => {
  await demo?.stop();
});

/** The rank dimension of every LoRA factor of a safetensors file (A [r, in], B [out, r]). */
function ranksOf(file: string): Set<number> {
  const buf = readFileSync(file);
  const h = parseSafetensorsHeader(buf, buf.byteLength, file);
  return new Set([...h.entries.values()].map((e) => (e.name.includes('.lora_A.') ? e.shape[0] : e.shape[1])));
}

const coordDb = () => openCoordinatorDb(join(out, 'coordinator', 'coordinator.sqlite'), { readonly: true });

describe('sites with different LoRA ranks, end to end', () => {
  it('every round publishes an adapter of the job\'s rank, aggregated from hospital-1 and hospital-2', () => {
    expect(demo.report.rounds.map((x) => [x.round, x.adapter?.contributing_sites])).toEqual([[1, 2], [2, 2]]);
    const db = coordDb();
    try {
      const versions = db.prepare('SELECT version, path FROM adapter_versions WHERE job_id = ? AND version > 0 ORDER BY version').all(demo.jobId) as { version: number; path: string }[];
      expect(versions.map((v) => v.version)).toEqual([1, 2]);
      for (const v of versions) {
        const file = statSync(v.path).isDirectory() ? join(v.path, 'adapter_model.safetensors') : v.path;
        expect([...ranksOf(file)], `v${v.version}`).toEqual([DEMO_LORA_RANK]);
      }
    } finally {
      db.close();
    }
  });

  it('hospital-2 sent rank-8 factors (its update recorded with lora_r 8, the stored file of that shape) and reported its trained rank', () => {
    const db = coordDb();
    try {
      const ups = db.prepare(`SELECT site_id, round, lora_r, path FROM updates WHERE job_id = ? AND status = 'accepted' ORDER BY round, site_id`).all(demo.jobId) as { site_id: string; round: number; lora_r: number | null; path: string }[];
      expect(ups.map((u) => [u.round, u.site_id, u.lora_r])).toEqual([[1, 'hospital-1', null], [1, 'hospital-2', SMALL], [2, 'hospital-1', null], [2, 'hospital-2', SMALL]]);
      for (const u of ups) {
        expect(existsSync(u.path)).toBe(true);
        expect([...ranksOf(u.path)], `${u.site_id} round ${u.round}`).toEqual([u.lora_r ?? DEMO_LORA_RANK]);
      }
      const trained = db.prepare(`SELECT site_id, round, value FROM metrics WHERE job_id = ? AND metric = 'train_lora_rank' ORDER BY round, site_id`).all(demo.jobId);
      expect(trained).toEqual([{ site_id: 'hospital-2', round: 1, value: SMALL }, { site_id: 'hospital-2', round: 2, value: SMALL }]);
    } finally {
      db.close();
    }
    // Each round hospital-2 started from the published adapter re-compressed to its rank.
    const log = readFileSync(join(out, 'logs', 'hospital-2.log'), 'utf8');
    expect(log.match(/training a lower LoRA rank/g)?.length).toBe(ROUNDS);
  });

  it('hospital-3, below the job\'s min_site_r, declined every round with the reason', () => {
    const db = coordDb();
    try {
      const declined = db.prepare(`SELECT round, decline_code, decline_reason FROM tasks WHERE job_id = ? AND site_id = 'hospital-3' AND kind = 'TASK_KIND_TRAIN' ORDER BY round`).all(demo.jobId) as { round: number; decline_code: string; decline_reason: string }[];
      expect(declined.map((t) => [t.round, t.decline_code])).toEqual([[1, 'FEDLORA_ERR_POLICY'], [2, 'FEDLORA_ERR_POLICY']]);
      for (const t of declined) expect(t.decline_reason).toBe(`the job trains LoRA rank ${DEMO_LORA_RANK} and accepts sites down to rank ${SMALL} (lora.min_site_r); this site trains at most rank ${TOO_SMALL} (policy.max_lora_rank)`);
      expect(db.prepare(`SELECT count(*) FROM updates WHERE job_id = ? AND site_id = 'hospital-3'`).pluck().get(demo.jobId)).toBe(0);
    } finally {
      db.close();
    }
  });
});
