// The whole federation as a user runs it: `fedlora demo` starts a coordinator and three site
// agents as separate processes (real mutual-TLS gRPC on localhost, real SQLite, real ONNX
// Runtime LoRA training), and we check what it published and what each site kept.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, readFileSync, statSync, readdirSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, createPrivateKey } from 'node:crypto';
import Database from 'better-sqlite3';
import { runDemo, DEMO_DEFAULTS, type DemoResult } from '../../cli/demo/run-demo.ts';
import { AuditLog } from '../../shared/audit.ts';
import { decodeSafetensorsF32 } from '../../shared/safetensors.ts';

let demo: DemoResult;
const out = join(mkdtempSync(join(tmpdir(), 'fedlora-demo-')), 'run');
const lines: string[] = [];

beforeAll(async () => {
  demo = await runDemo({ ...DEMO_DEFAULTS, sites: 3, rounds: 2, records: 80, localSteps: 6, out, log: (l) => lines.push(l) });
}, 600_000);

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

  it('serves each published adapter over HTTP in PEFT format with the sha256 in the report', async () => {
    for (const round of demo.report.rounds) {
      const v = round.adapter!.version;
      const bytes = Buffer.from(await (await fetch(`${demo.httpUrl}/api/jobs/${demo.jobId}/adapters/${v}/adapter_model.safetensors`)).arrayBuffer());
      expect(createHash('sha256').update(bytes).digest('hex')).toBe(round.adapter!.sha256);
      const cfg = (await (await fetch(`${demo.httpUrl}/api/jobs/${demo.jobId}/adapters/${v}/adapter_config.json`)).json()) as Record<string, unknown>;
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

  it('evaluates every consenting hospital\'s local-only adapter at every hospital (cross-site matrix)', () => {
    const ce = demo.report.crossEval as { data_sites: string[]; model_owners: string[]; values: (number | null)[][] };
    expect(ce.data_sites).toEqual(['hospital-1', 'hospital-2', 'hospital-3']);
    expect(ce.model_owners).toEqual(['hospital-1', 'hospital-2', 'hospital-3']);
    for (const row of ce.values) for (const v of row) expect(Number.isFinite(v)).toBe(true);
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
      const db = new Database(join(out, 'sites', `hospital-${k}`, 'site.sqlite'), { readonly: true });
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
