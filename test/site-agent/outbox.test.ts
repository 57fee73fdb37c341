// The site's durable outbox (site-agent/agent/outbox.ts + outbox-delivery.ts) on a real SQLite
// file, with a scripted FederationWire: an update is recorded (bytes + the exact signed header)
// before it is sent; resumed under the same update id; acknowledged, discarded or kept pending
// depending on the coordinator's answer. And the agent itself: pending updates are flushed at
// start, and a TRAIN task sent again is resumed or skipped, never trained twice.
import { afterEach, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import Database from 'better-sqlite3-multiple-ciphers';
import { SiteOutbox, type OutboxInfo } from '../../site-agent/agent/outbox.ts';
import { deliverEntry, type DeliveryDeps } from '../../site-agent/agent/outbox-delivery.ts';
import { SiteAgent, type AgentLogger } from '../../site-agent/agent/agent.ts';
import type { FederationWire, SubmitResult, UpdateHeaderOut, WireTask } from '../../site-agent/agent/wire.ts';
import type { Trainer } from '../../site-agent/agent/trainers.ts';
import { AuditLog } from '../../shared/audit.ts';
import { fail } from '../../shared/errors.ts';
import { parseSiteConfig } from '../../site-agent/config.ts';
import { openSiteDb } from '../../site-agent/site-db.ts';

const dirs: string[] = [];
const dbs: Database.Database[] = [];
afterEach(() => {
  for (const d of dbs.splice(0)) d.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function site() {
  const dir = mkdtempSync(join(tmpdir(), 'fedlora-outbox-'));
  dirs.push(dir);
  const db = openSiteDb(dir);
  db.pragma('journal_mode = WAL');
  dbs.push(db);
  return { dir, db };
}

const quiet: AgentLogger & { lines: { level: string; obj: Record<string, unknown>; msg: string }[] } = {
  lines: [],
  info(obj, msg) { this.lines.push({ level: 'info', obj, msg }); },
  warn(obj, msg) { this.lines.push({ level: 'warn', obj, msg }); },
  error(obj, msg) { this.lines.push({ level: 'error', obj, msg }); },
};

function header(updateId: string, taskId: string, bytes: Buffer): UpdateHeaderOut {
  return {
    updateId, taskId, jobId: 'job-1', round: 2, baseVersion: 1, totalBytes: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex'),
    chunkSize: 64 * 1024, numExamples: 7, payloadKind: 'delta', signature: Buffer.from([1, 2, 3, 250]), updateNorm: 0.5, clipped: false,
    metadataJson: Buffer.from('{"final_loss":1.25}'),
  };
}
const info: OutboxInfo = { trainLoss: 1.25, tokensPerSecond: 100, numExamples: 7, payloadKind: 'delta', tensors: 4, l2Norm: 0.5 };

/** A wire whose submitUpdate answers from a script, recording every call. */
function scriptedWire(answers: ((h: UpdateHeaderOut) => SubmitResult | Error)[], tasks: WireTask[] = [], heartbeatFailures = 0) {
  const calls: { header: UpdateHeaderOut; fileBytes: Buffer }[] = [];
  const metrics: { taskId: string; phase: string; names: string[] }[] = [];
  const declined: string[] = [];
  let beats = 0;
  const wire: FederationWire = {
    heartbeat: async () => {
      if (beats++ < heartbeatFailures) throw fail('FEDLORA_ERR_UNAVAILABLE', 'connect ECONNREFUSED');
      return { serverTimeUnixMs: Date.now(), renewCertificate: false };
    },
    streamTasks: (onTask, signal) => new Promise<void>((resolve) => {
      setTimeout(() => tasks.forEach(onTask), 20);
      signal.addEventListener('abort', () => resolve());
    }),
    declineTask: async (taskId) => void declined.push(taskId),
    fetchAdapter: async () => { throw new Error('not used'); },
    submitUpdate: async (h, file) => {
      calls.push({ header: h, fileBytes: readFileSync(file) });
      const a = (answers.shift() ?? (() => new Error('no answer scripted')))(h);
      if (a instanceof Error) throw a;
      return a;
    },
    reportMetrics: async (r) => void metrics.push({ taskId: r.taskId, phase: r.phase, names: r.metrics.map((m) => m.name) }),
    renewCertificate: async () => ({ renewed: false, notAfterUnixMs: 0 }),
    secAgg: async () => { throw new Error('not used'); },
    close: () => undefined,
  };
  return { wire, calls, metrics, declined };
}
const complete = (h: UpdateHeaderOut, from = 0): SubmitResult => ({ updateId: h.updateId, receivedBytes: h.totalBytes, complete: true, sha256: h.sha256, resumedFromChunk: from });

describe('site outbox storage', () => {
  it('records the bytes durably and the exact signed header before sending; one table, created idempotently', () => {
    const { dir, db } = site();
    const ob = new SiteOutbox(db, dir);
    new SiteOutbox(db, dir); // opening twice is fine
    const bytes = Buffer.from('safetensors bytes '.repeat(100));
    const e = ob.put(header('u-1', 't-1', bytes), bytes, info);
    expect(e.state).toBe('pending');
    expect(e.file).toBe(join(dir, 'outbox', 'u-1.safetensors'));
    expect(readFileSync(e.file).equals(bytes)).toBe(true);
    expect(readdirSync(join(dir, 'outbox'))).toEqual(['u-1.safetensors']); // no .tmp left behind
    const again = new SiteOutbox(db, dir).forTask('t-1')!;
    expect(again.header.signature.equals(Buffer.from([1, 2, 3, 250]))).toBe(true);
    expect(again.header.metadataJson.toString()).toBe('{"final_loss":1.25}');
    expect(again.header).toMatchObject({ updateId: 'u-1', taskId: 't-1', sha256: e.header.sha256, totalBytes: bytes.length, chunkSize: 65536 });
    expect(again.info).toEqual(info);
    expect(() => ob.put(header('../evil', 't-2', bytes), bytes, info)).toThrow(/FEDLORA_ERR_INVALID_ARGUMENT|must match/);
    expect(() => ob.put({ ...header('u-2', 't-2', bytes), totalBytes: 3 }, bytes, info)).toThrow(/header says 3 bytes/);
  });

  it('removes files no pending entry refers to (crash between writing and recording)', () => {
    const { dir, db } = site();
    const ob = new SiteOutbox(db, dir);
    const bytes = Buffer.from('x'.repeat(64));
    ob.put(header('u-keep', 't-1', bytes), bytes, info);
    writeFileSync(join(dir, 'outbox', 'u-stray.safetensors'), 'stray');
    writeFileSync(join(dir, 'outbox', 'u-half.safetensors.tmp'), 'half');
    expect(ob.removeOrphans().sort()).toEqual(['u-half.safetensors.tmp', 'u-stray.safetensors']);
    expect(readdirSync(join(dir, 'outbox'))).toEqual(['u-keep.safetensors']);
  });
});

describe('delivering an outbox entry', () => {
  const setup = (answers: ((h: UpdateHeaderOut) => SubmitResult | Error)[]) => {
    const { dir, db } = site();
    const outbox = new SiteOutbox(db, dir);
    const audit = new AuditLog(db, 'site_audit');
    const w = scriptedWire(answers);
    const d: DeliveryDeps = { siteId: 'hospital-1', wire: w.wire, outbox, audit, log: quiet };
    const bytes = Buffer.from('update payload '.repeat(50));
    const e = outbox.put(header('u-1', 't-1', bytes), bytes, info);
    return { d, e, w, outbox, audit, bytes };
  };

  it('acknowledged complete: state acknowledged + egress audit entry, bytes deleted; same id and header as recorded', async () => {
    const { d, e, w, outbox, audit, bytes } = setup([(h) => complete(h, 3)]);
    const r = await deliverEntry(d, e);
    expect(r.resumedFromChunk).toBe(3);
    expect(w.calls).toHaveLength(1);
    expect(w.calls[0].header.updateId).toBe('u-1');
    expect(w.calls[0].header.signature.equals(e.header.signature)).toBe(true);
    expect(w.calls[0].fileBytes.equals(bytes)).toBe(true);
    expect(outbox.get('u-1')).toMatchObject({ state: 'acknowledged', reason: null });
    expect(existsSync(e.file)).toBe(false);
    const egress = audit.list({ action: 'egress' });
    expect(egress).toHaveLength(1);
    expect(egress[0].details).toMatchObject({ update_id: 'u-1', bytes: bytes.length, sha256: e.header.sha256, resumed_from_chunk: 3, to: 'coordinator' });
    await expect(deliverEntry(d, outbox.get('u-1')!)).rejects.toThrow(/acknowledged, not pending/); // never sent twice
  });

  it('a final refusal (round closed) discards it with the reason, deletes the bytes and audits it', async () => {
    const { d, e, outbox, audit } = setup([() => fail('FEDLORA_ERR_ROUND_CLOSED', 'update u-1 is discarded: round closed before the upload finished')]);
    await expect(deliverEntry(d, e)).rejects.toMatchObject({ code: 'FEDLORA_ERR_ROUND_CLOSED' });
    const after = outbox.get('u-1')!;
    expect(after.state).toBe('discarded');
    expect(after.reason).toMatch(/^FEDLORA_ERR_ROUND_CLOSED: .*round closed before the upload finished/);
    expect(existsSync(e.file)).toBe(false);
    expect(audit.list({ action: 'update_discarded' }).map((x) => x.details.update_id)).toEqual(['u-1']);
    expect(audit.list({ action: 'egress' })).toEqual([]);
  });

  it('a lost connection or an unfinished stream keeps it pending with its bytes (resumed later)', async () => {
    const { d, e, outbox } = setup([
      () => fail('FEDLORA_ERR_UNAVAILABLE', 'connection reset'),
      (h) => ({ updateId: h.updateId, receivedBytes: 10, complete: false, sha256: '' }),
      () => fail('FEDLORA_ERR_DISK_FULL', 'coordinator disk full'),
      (h) => complete(h, 1),
    ]);
    await expect(deliverEntry(d, e)).rejects.toMatchObject({ code: 'FEDLORA_ERR_UNAVAILABLE' });
    await expect(deliverEntry(d, e)).rejects.toMatchObject({ code: 'FEDLORA_ERR_UNAVAILABLE', message: expect.stringMatching(/without completing/) });
    await expect(deliverEntry(d, e)).rejects.toMatchObject({ code: 'FEDLORA_ERR_DISK_FULL' });
    expect(outbox.get('u-1')!.state).toBe('pending');
    expect(existsSync(e.file)).toBe(true);
    await deliverEntry(d, e);
    expect(outbox.get('u-1')!.state).toBe('acknowledged');
  });

  it('bytes that vanished from the outbox folder: discarded (the task may be trained again), nothing sent', async () => {
    const { d, e, w, outbox, audit } = setup([(h) => complete(h)]);
    rmSync(e.file);
    await expect(deliverEntry(d, e)).rejects.toMatchObject({ code: 'FEDLORA_ERR_IO' });
    expect(w.calls).toEqual([]);
    expect(outbox.get('u-1')).toMatchObject({ state: 'discarded', reason: expect.stringMatching(/^FEDLORA_ERR_IO: .*are gone/) });
    expect(audit.list({ action: 'update_discarded' })).toHaveLength(1);
  });

  it('an acknowledgement for other bytes is not taken as this update', async () => {
    const { d, e, outbox } = setup([(h) => ({ ...complete(h), sha256: 'f'.repeat(64) })]);
    await expect(deliverEntry(d, e)).rejects.toMatchObject({ code: 'FEDLORA_ERR_UPDATE_HASH' });
    expect(outbox.get('u-1')!.state).toBe('discarded');
  });
});

describe('the agent and its outbox', () => {
  const task = (taskId: string): WireTask => ({ taskId, jobId: 'job-1', round: 2, kind: 'TASK_KIND_TRAIN' }) as WireTask;

  it('flushes pending updates first; a resent task is resumed (same id) or skipped, never retrained', async () => {
    const { dir, db } = site();
    const seed = new SiteOutbox(db, dir);
    const b = (s: string) => Buffer.from(s.repeat(40));
    // From "before the restart": A was half uploaded, B's round closed meanwhile, C's coordinator is unreachable at first.
    seed.put(header('u-a', 't-a', b('a')), b('a'), info);
    seed.put(header('u-b', 't-b', b('b')), b('b'), info);
    seed.put(header('u-c', 't-c', b('c')), b('c'), info);
    const w = scriptedWire(
      [
        (h) => complete(h, 2), // flush: A resumed from chunk 2
        () => fail('FEDLORA_ERR_ROUND_CLOSED', 'update u-b is discarded'), // flush: B
        () => fail('FEDLORA_ERR_UNAVAILABLE', 'connect ECONNREFUSED'), // flush: C stays pending
        (h) => complete(h, 1), // task t-c resent: C resumed from the task, not retrained
      ],
      [task('t-a'), task('t-c')],
    );
    let trained = 0;
    const trainer: Trainer = { kind: 'fake', train: async () => { trained++; throw new Error('must not train'); } };
    quiet.lines.length = 0;
    const agent = new SiteAgent({ siteDir: dir, siteId: 'hospital-1', config: parseSiteConfig({ model: { path: join(dir, 'model') } }), db, wire: w.wire, log: quiet, trainer });
    agent.start();
    const until = Date.now() + 10_000;
    while (w.calls.length < 4 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 100));
    await agent.stop();

    expect(trained).toBe(0);
    expect(w.calls.map((c) => c.header.updateId)).toEqual(['u-a', 'u-b', 'u-c', 'u-c']);
    expect(agent.outbox.list().map((e) => [e.updateId, e.state])).toEqual([['u-a', 'acknowledged'], ['u-b', 'discarded'], ['u-c', 'acknowledged']]);
    expect(readdirSync(join(dir, 'outbox'))).toEqual([]);
    // Training metrics saved with A and C were reported once each; nothing was declined.
    expect(w.metrics.filter((m) => m.phase === 'train').map((m) => m.taskId)).toEqual(['t-a', 't-c']);
    expect(w.declined).toEqual([]);
    expect(quiet.lines.some((l) => l.msg.includes('already submitted') && l.obj.task === 't-a')).toBe(true);
    const audit = new AuditLog(db, 'site_audit');
    expect(audit.list({ action: 'egress' }).filter((x) => x.details.what === 'adapter update').map((x) => x.details.update_id)).toEqual(['u-a', 'u-c']);
    expect(audit.list({ action: 'update_discarded' }).map((x) => x.details.update_id)).toEqual(['u-b']);
    expect(audit.verify().ok).toBe(true);
  });

  it('started while the coordinator is unreachable: pending updates go out once it answers again, without their task', async () => {
    const { dir, db } = site();
    const b = Buffer.from('d'.repeat(40));
    new SiteOutbox(db, dir).put(header('u-d', 't-d', b), b, info);
    const w = scriptedWire(
      [
        () => fail('FEDLORA_ERR_UNAVAILABLE', 'connect ECONNREFUSED'), // the flush at start
        (h) => complete(h, 3), // the flush once heartbeats get through
      ],
      [], // the task is never sent again (e.g. its round is waiting for this very update)
      3,
    );
    const trainer: Trainer = { kind: 'fake', train: async () => { throw new Error('must not train'); } };
    const config = parseSiteConfig({ model: { path: join(dir, 'model') }, network: { heartbeat_interval_ms: 20 } });
    const agent = new SiteAgent({ siteDir: dir, siteId: 'hospital-1', config, db, wire: w.wire, log: quiet, trainer });
    agent.start();
    const until = Date.now() + 10_000;
    while (agent.outbox.get('u-d')?.state !== 'acknowledged' && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    await agent.stop();
    expect(w.calls.map((c) => c.header.updateId)).toEqual(['u-d', 'u-d']);
    expect(agent.outbox.get('u-d')!.state).toBe('acknowledged');
    expect(w.metrics.filter((m) => m.phase === 'train').map((m) => m.taskId)).toEqual(['t-d']);
  });
});
