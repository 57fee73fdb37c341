// After `fedlora site rekey` everything that reads site.sqlite still works with the new key: the
// data report, the audit log, the assistant (its users' keys and a page reading records), and the
// agent's training round (datasets from the records, outbox, audit). The old key no longer opens
// the file; a rekey while another process has it open is refused. `fedlora site backup` stays
// encrypted and restores, a backup from before the rekey with the key of its time (--key-file).
import { describe, it, expect, afterAll } from 'vitest';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { makeSite, rmDir, type TestSite } from '../serve/helpers.ts';
import { startServe } from '../../site-agent/serve/run.ts';
import type { ServePlugin } from '../../site-agent/serve/server.ts';
import { openSiteDb, siteDbSpec } from '../../site-agent/site-db.ts';
import { generateSites, ingestIntoSite } from '../../site-agent/data/index.ts';
import { AuditLog } from '../../shared/audit.ts';
import { openCopyWithKey, rekeyCipherDb } from '../../shared/sqlite-cipher.ts';
import { SiteOutbox } from '../../site-agent/agent/outbox.ts';
import { SiteWorkspace } from '../../site-agent/agent/workspace.ts';
import { EngineEvaluator } from '../../site-agent/agent/evaluation.ts';
import { runTrainRound } from '../../site-agent/agent/train-round.ts';
import type { Trainer } from '../../site-agent/agent/trainers.ts';
import type { TaskDeps } from '../../site-agent/agent/task-context.ts';
import type { AdapterWeights } from '../../shared/lora/types.ts';
import { siteFixture, type SiteFixture } from '../site-agent/site-fixture.ts';
import { fedlora } from './helpers.ts';

let site: TestSite | undefined;
let fixture: SiteFixture | undefined;
afterAll(() => {
  if (site) rmDir(site.dir);
  fixture?.cleanup();
});

const recordsPage: ServePlugin = async (app, ctx) => {
  app.get('/records/count', { onRequest: ctx.requireRole('clinician') }, async () => ({ records: ctx.db.prepare('SELECT count(*) FROM data_records').pluck().get() }));
};

describe('fedlora site rekey, backup, restore', () => {
  it('data report, audit, the assistant and backups work after a rekey; the old key opens nothing', async () => {
    site = makeSite('enc-rekey');
    const { siteDir, dir } = site;
    const [synth] = generateSites({ sites: 1, records: 30, lang: 'mixed', seed: 5, format: 'csv', out: join(dir, 'export') });
    const ingest = await ingestIntoSite(siteDir, [synth.file!], { format: 'csv' });
    expect(ingest.accepted).toBe(30);
    const keyFile = join(siteDir, 'secrets', 'db.key');
    const oldKey = readFileSync(keyFile, 'utf8');
    writeFileSync(join(dir, 'old.key'), oldKey, { mode: 0o600 });

    const b1 = await fedlora(['site', 'backup', '--site-dir', siteDir, '--out', join(dir, 'before-rekey')]);
    expect(b1.status, b1.stderr).toBe(0);
    expect(b1.stdout).toMatch(/30 records, schema \d+, encrypted \(key fingerprint [0-9a-f]{16}\)/);

    // In use: refused, nothing changed.
    const held = openSiteDb(siteDir);
    const busy = await fedlora(['site', 'rekey', '--site-dir', siteDir]);
    held.close();
    expect(busy.status).toBe(2);
    expect(busy.stderr).toMatch(/FEDLORA_ERR_DB_IN_USE: .*site\.sqlite is open in another process/);
    expect(readFileSync(keyFile, 'utf8')).toBe(oldKey);

    const r = await fedlora(['site', 'rekey', '--site-dir', siteDir]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain(`rekeyed ${join(siteDir, 'site.sqlite')}; the key is in the key file ${keyFile}`);
    const newKey = readFileSync(keyFile, 'utf8');
    expect(newKey.trim()).toMatch(/^[0-9a-f]{64}$/);
    expect(newKey).not.toBe(oldKey);
    expect(() => openCopyWithKey(join(siteDir, 'site.sqlite'), oldKey, 'old key')).toThrow(/the old key does not open it/);

    const rep = await fedlora(['site', 'data', 'report', '--site-dir', siteDir, '--json']);
    expect(rep.status, rep.stderr).toBe(0);
    expect(JSON.parse(rep.stdout).records).toBe(30);
    const audit = await fedlora(['audit', 'verify', '--site-dir', siteDir]);
    expect(audit.status, audit.stderr).toBe(0);
    expect(audit.stdout).toMatch(/audit chain OK: \d+ entries/);

    // The assistant: API keys checked against serve_api_keys, a page reading the records.
    const srv = await startServe(siteDir, { plugins: [recordsPage] });
    try {
      const get = (path: string) => fetch(`${srv.url}${path}`, { headers: { authorization: `Bearer ${site!.keys.clinician}` } });
      const models = await get('/v1/models');
      expect(models.status).toBe(200);
      expect(((await models.json()) as { data: { id: string }[] }).data.length).toBeGreaterThan(0);
      expect(await (await get('/records/count')).json()).toEqual({ records: 30 });
    } finally {
      await srv.close();
    }

    // Backups: the one from before the rekey needs the key of its time; it is re-encrypted on restore.
    const wrongKey = await fedlora(['site', 'restore', '--site-dir', siteDir, '--from', join(dir, 'before-rekey'), '--force']);
    expect(wrongKey.status).toBe(2);
    expect(wrongKey.stderr).toMatch(/FEDLORA_ERR_DB_KEY: .*was made with the key of fingerprint [0-9a-f]{16}; the site's current key is [0-9a-f]{16}\. Give the key of that time with --key-file/);
    const restored = await fedlora(['site', 'restore', '--site-dir', siteDir, '--from', join(dir, 'before-rekey'), '--key-file', join(dir, 'old.key'), '--force']);
    expect(restored.status, restored.stderr).toBe(0);
    expect(restored.stdout).toMatch(/restored: 30 records, schema \d+, re-encrypted with the site's current key; the replaced file is .*site\.sqlite\.before-restore-/);
    expect(readFileSync(keyFile, 'utf8')).toBe(newKey);
    const db = openSiteDb(siteDir);
    try {
      expect(db.prepare('SELECT count(*) FROM data_records').pluck().get()).toBe(30);
      expect(new AuditLog(db, 'site_audit').verify().ok).toBe(true);
    } finally {
      db.close();
    }
    // A fresh backup of the rekeyed site restores with the current key alone.
    const b2 = await fedlora(['site', 'backup', '--site-dir', siteDir, '--out', join(dir, 'after-rekey')]);
    expect(b2.status, b2.stderr).toBe(0);
    const again = await fedlora(['site', 'restore', '--site-dir', siteDir, '--from', join(dir, 'after-rekey'), '--force']);
    expect(again.status, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/^restored: 30 records, schema \d+; the replaced file/);
    expect(existsSync(join(dir, 'after-rekey', 'backup.json'))).toBe(true);
  });

  it("the agent's training round reads and writes the rekeyed database", async () => {
    fixture = await siteFixture();
    const f = fixture;
    f.db.close();
    expect(rekeyCipherDb(siteDbSpec(f.dir)).from).toBe('encrypted');
    const db = openSiteDb(f.dir);
    try {
      const trainer: Trainer = {
        kind: 'shift',
        async train(req) {
          const lines = readFileSync(req.trainFile, 'utf8').trim().split('\n').length;
          const adapter: AdapterWeights = new Map([...req.initAdapter!].map(([k, t]) => [k, { shape: t.shape, data: t.data.map((v) => (k.includes('.lora_B.') ? v + 0.25 : v)) }]));
          return { adapter, numExamples: lines, lossPerStep: [2.5], tokensPerSecond: 1 };
        },
      };
      // TaskDeps as the SiteAgent builds them (as the fixture does), on the reopened handle.
      const deps: TaskDeps = {
        siteId: 'hospital-fixture', config: f.config, wire: f.coordinator.wire, log: f.log, trainer,
        audit: new AuditLog(db, 'site_audit'), outbox: new SiteOutbox(db, f.dir),
        workspace: new SiteWorkspace(f.dir, f.config, db, f.log, (m) => new EngineEvaluator(m, f.config.model.device)),
        status: { state: 'idle', trainingTokensPerSecond: 0 }, signal: new AbortController().signal,
        siteKeyPem: () => readFileSync(join(f.dir, 'site.key'), 'utf8'), onGlobalVerified: [],
      };
      await runTrainRound(deps, f.task());
      expect(f.coordinator.uploads).toHaveLength(1);
      expect(db.prepare("SELECT count(*) FROM site_outbox WHERE state = 'acknowledged'").pluck().get()).toBe(1);
      expect(new AuditLog(db, 'site_audit').list({ action: 'egress' }).length).toBeGreaterThan(0);
      expect(db.prepare('SELECT count(*) FROM data_splits').pluck().get()).toBe(60);
    } finally {
      db.close();
    }
  });
});
