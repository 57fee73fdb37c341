// The whole federation as a user runs it: `fedlora demo` starts a coordinator and three site
// agents as separate processes (real mutual-TLS gRPC on localhost, real SQLite, real ONNX
// Runtime LoRA training), and we check what it published and what each site kept.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, readFileSync, statSync, readdirSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, createPrivateKey } from 'node:crypto';
import Database from 'better-sqlite3-multiple-ciphers';
import { runDemo, DEMO_DEFAULTS, CHOICES, type DemoResult } from '../../cli/demo/run-demo.ts';
import { AuditLog } from '../../shared/audit.ts';
import { openSiteDb } from '../../site-agent/site-db.ts';
import { decodeSafetensorsF32 } from '../../shared/safetensors.ts';
import { TEST_TIMEOUT_MS } from '../runner/limits.ts';

let demo: DemoResult;
const out = join(mkdtempSync(join(tmpdir(), 'fedlora-demo-')), 'run');
const lines: string[] = [];

// The test's own small settings (not the demo's defaults, tuned for a few minutes' run).
const SMALL_SITE = 30, SHARED_PER_DIAGNOSIS = 3;

beforeAll(async () => {
  demo = await runDemo({
    ...DEMO_DEFAULTS, sites: 3, rounds: 2, records: 80, localSteps: 15, learningRate: 0.01, skew: 0.8, smallSite: SMALL_SITE, sharedPerDiagnosis: SHARED_PER_DIAGNOSIS,
    personalSteps: 0, out, log: (l) => lines.push(l),
  });
}, 5 * TEST_TIMEOUT_MS);

afterAll(async () => {
  await demo?.stop();
});

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)]));
}

describe('fedlora demo: three hospitals, two rounds', () => {
  it('publishes one adapter version per round, each aggregated from all three sites', async () => {
    const r = demo.report;
    expect(r.rounds.map((x) => x.round)).toEqual([1, 2]);
    for (const round of r.rounds) {
      expect(round.participants.map((p) => p.site).sort()).toEqual(['hospital-1', 'hospital-2', 'hospital-3']);
      expect(round.participants.every((p) => p.examples > 0)).toBe(true);
      expect(round.adapter?.version).toBe(round.round);
      expect(round.adapter?.contributing_sites).toBe(3);
    }
    expect(JSON.parse(readFileSync(demo.reportFile, 'utf8')).job).toBe(demo.jobId);
  });

  it("ends with hospital-1's assistant: its address and one answer with citations, the disclaimer and the version", async () => {
    const a = demo.assistant!; // DEMO_DEFAULTS.assistant is true
    const text = lines.join('\n');
    expect(text).toContain(`[7/7] hospital-1's assistant: ${a.url}/`);
    expect(text).toMatch(/release gate: job-\S+\/v2 (held|approved|passed)/);
    expect(a.answer.endsWith("This AI's suggestions are for reference only and cannot replace diagnosis and treatment by a qualified doctor.")).toBe(true);
    expect(a.citations[0]).toMatchObject({ n: 1, source: 'hypertension.md' });
    expect(text).toContain(`A (${a.modelVersion}): `);
    expect((await fetch(`${a.url}/health`)).ok).toBe(true);
  });

  it('serves each published adapter over HTTP in PEFT format with the sha256 in the report', async () => {
    for (const round of demo.report.rounds) {
      const v = round.adapter!.version;
      const bytes = Buffer.from(await (await fetch(`${demo.httpUrl}/api/jobs/${demo.jobId}/adapters/${v}/adapter_model.safetensors`, { headers: { authorization: `Bearer ${demo.adminToken}` } })).arrayBuffer());
      expect(createHash('sha256').update(bytes).digest('hex')).toBe(round.adapter!.sha256);
      const cfg = (await (await fetch(`${demo.httpUrl}/api/jobs/${demo.jobId}/adapters/${v}/adapter_config.json`, { headers: { authorization: `Bearer ${demo.adminToken}` } })).json()) as Record<string, unknown>;
      expect(cfg.peft_type).toBe('LORA');
      expect(cfg.task_type).toBe('CAUSAL_LM');
      const { tensors } = decodeSafetensorsF32(bytes);
      const keys = [...tensors.keys()];
      expect(keys.some((k) => /^base_model\.model\.model\.layers\.0\.self_attn\.q_proj\.lora_B\.weight$/.test(k))).toBe(true);
      // after training, B is no longer all zeros
      const b = tensors.get('base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight')!.data;
      expect(b.some((x) => x !== 0)).toBe(true);
    }
  });

  it('lowers every reporting site\'s held-out loss from the initial adapter to the last round', () => {
    const r = demo.report;
    const last = r.rounds.at(-1)!;
    let compared = 0;
    for (const s of r.sites) {
      const before = r.initial[s.site]?.loss;
      const after = last.heldout[s.site]?.global.loss;
      const local = last.heldout[s.site]?.local.loss;
      if (before === undefined || after === undefined) continue;
      compared++;
      expect(after).toBeLessThan(before);
      expect(local).toBeLessThan(before);
    }
    expect(compared).toBeGreaterThanOrEqual(2);
  });

  it('evaluates every consenting hospital\'s local-only adapter at every hospital, with the final global adapter beside them (cross-site matrix)', () => {
    const ce = demo.report.crossEval as { metric: string; data_sites: string[]; model_owners: string[]; values: (number | null)[][]; global: { version: number; values: (number | null)[] } };
    expect(ce.metric).toBe('accuracy');
    expect(ce.data_sites).toEqual(['hospital-1', 'hospital-2', 'hospital-3']);
    expect(ce.model_owners).toEqual(['hospital-1', 'hospital-2', 'hospital-3']);
    for (const row of ce.values) for (const v of row) expect(Number.isFinite(v)).toBe(true);
    expect(ce.global.version).toBe(2);
    // the global column is the figure each site reported for v2 on the same held-out items
    ce.data_sites.forEach((d, i) => expect(ce.global.values[i]).toBe(demo.report.rounds[1].heldout[d].global.accuracy));
  });

  it('makes one hospital small and scores every hospital on the same consortium-wide balanced set', () => {
    const counts = readdirSync(join(out, 'data')).filter((d) => d.startsWith('site-')).sort().map((d) => JSON.parse(readFileSync(join(out, 'data', d, 'manifest.json'), 'utf8')).records);
    expect(counts).toEqual([80, 80, SMALL_SITE]);
    const shared = readFileSync(join(out, 'data', 'consortium-test.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { diagnosis: string });
    const perDx = new Map<string, number>();
    for (const c of shared) perDx.set(c.diagnosis, (perDx.get(c.diagnosis) ?? 0) + 1);
    expect([...perDx.values()].every((n) => n === SHARED_PER_DIAGNOSIS)).toBe(true);
    for (const r of demo.report.rounds) {
      const set = r.shared['shared:consortium'];
      for (const s of demo.report.sites) {
        for (const kind of ['global', 'local'] as const) expect(set.sites[s.site][kind].accuracy.count).toBe(shared.length);
      }
      expect(set.consortium.global.accuracy.sites).toBe(3);
    }
  });

  it('ends with the global adapter clearly above chance at every hospital: its 95% interval on the balanced set lies above 1/4', () => {
    const last = demo.report.rounds.at(-1)!;
    for (const s of demo.report.sites) {
      const g = last.shared['shared:consortium'].sites[s.site].global.accuracy;
      expect(g.ci_low).not.toBeNull();
      expect(g.ci_low!).toBeGreaterThan(1 / CHOICES);
    }
  });

  it('says, with intervals, where the global adapter beats local-only training and where it does not (printed and in report.json)', () => {
    const c = demo.report.comparison!;
    expect(c.round).toBe(2);
    expect(c.chance).toBe(1 / CHOICES);
    expect(c.rows.map((r) => `${r.site} ${r.eval_set}`).sort()).toEqual(
      ['hospital-1', 'hospital-2', 'hospital-3'].flatMap((s) => [`${s} held-out`, `${s} shared:consortium`]).sort(),
    );
    for (const r of [...c.rows, ...c.consortium]) {
      for (const e of [r.global!, r.local!]) expect(e.ci_low! <= e.value && e.value <= e.ci_high!).toBe(true);
      expect(r.difference).toBeCloseTo(r.global!.value - r.local!.value, 12);
      // every hospital trains a local-only baseline: the verdict reads the paired difference of the same items
      const d = r.paired!;
      expect(r.basis).toBe('paired difference');
      expect(d.value).toBeCloseTo(r.difference!, 6);
      expect(d.ci_low! <= d.value && d.value <= d.ci_high!).toBe(true);
      expect(r.verdict).toBe(d.ci_low! > 0 ? 'global better' : d.ci_high! < 0 ? 'local-only better' : 'no clear difference');
      expect(r.global_above_chance).toBe(r.global!.ci_low! > 1 / CHOICES);
    }
    for (const r of c.rows) expect(r.paired!.count).toBe(r.global!.count);
    expect(c.rows.find((r) => r.site === 'hospital-3')!.note).toContain('the small one');
    const text = lines.join('\n');
    expect(text).toContain('where the global adapter beats local-only training');
    for (const r of c.rows) expect(text).toContain(`${r.site} (${r.note}), ${r.eval_set}: global ${r.global!.value.toFixed(3)} [`);
    expect(text).toContain('chance 0.25');
    expect(text).toMatch(/paired difference [+-]\d\.\d{3} \[[+-]\d\.\d{3}, [+-]\d\.\d{3}\] → (global better|local-only better|no clear difference)/);
    expect(JSON.parse(readFileSync(demo.reportFile, 'utf8')).comparison.rows).toHaveLength(6);
  });

  it('ends every side task done: the agents answered the final EVALUATE and cross-eval tasks and said so', async () => {
    const db = new Database(join(out, 'coordinator', 'coordinator.sqlite'), { readonly: true });
    try {
      const rows = () => db.prepare('SELECT kind, status FROM side_tasks ORDER BY kind, site_id').all() as Array<{ kind: string; status: string }>;
      // the last task_done report may arrive just after the numbers the demo waited for
      for (let i = 0; i < 100 && rows().some((r) => r.status !== 'done'); i++) await new Promise((r) => setTimeout(r, 100));
      const kinds = ['TASK_KIND_CROSS_EVAL', 'TASK_KIND_EVALUATE', 'TASK_KIND_UPLOAD_LOCAL'];
      expect(rows()).toEqual(kinds.flatMap((kind) => [1, 2, 3].map(() => ({ kind, status: 'done' }))));
    } finally {
      db.close();
    }
  });

  it('keeps each site private key at the site (0600) and never at the coordinator', () => {
    const coordFiles = walk(join(out, 'coordinator'));
    for (const k of [1, 2, 3]) {
      const keyFile = join(out, 'sites', `hospital-${k}`, 'site.key');
      expect(statSync(keyFile).mode & 0o777).toBe(0o600);
      // the secret scalar itself (not the PKCS#8 header every P-256 key shares), raw and base64
      const d = createPrivateKey(readFileSync(keyFile)).export({ format: 'jwk' }).d!;
      const raw = Buffer.from(d, 'base64url');
      const b64 = raw.toString('base64').slice(0, 40);
      for (const f of coordFiles) {
        const bytes = readFileSync(f);
        expect(bytes.indexOf(raw)).toBe(-1);
        expect(bytes.toString('latin1').includes(b64)).toBe(false);
        expect(bytes.toString('latin1').includes(d.slice(0, 40))).toBe(false);
      }
    }
  });

  it("records every egress in each site's tamper-evident audit log", () => {
    for (const k of [1, 2, 3]) {
      const db = openSiteDb(join(out, 'sites', `hospital-${k}`), { readonly: true });
      try {
        const log = new AuditLog(db, 'site_audit');
        expect(log.verify().ok).toBe(true);
        const updates = log.list({ action: 'egress' }).filter((e) => e.details.what === 'adapter update');
        expect(updates.length).toBe(2);
        expect(updates.every((e) => typeof e.details.sha256 === 'string' && (e.details.bytes as number) > 0)).toBe(true);
      } finally {
        db.close();
      }
    }
    expect(existsSync(join(out, 'data', 'site-1'))).toBe(true);
  });
});
