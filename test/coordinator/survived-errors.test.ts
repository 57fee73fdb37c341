// Errors the coordinator survives on purpose are never silent: a forced audit-write failure (an
// admin request) and a forced engine-tick failure are each logged with their context and counted
// in /metrics (fedlora_errors_total{kind}), while the API keeps answering.
import { describe, it, expect, afterAll } from 'vitest';
import { pino } from 'pino';
import { initCoordinator, startCoordinator, type RunningCoordinator } from '../../coordinator/service.ts';
import { tempDir, rmDir } from './helpers.ts';

const dirs: string[] = [];
let coord: RunningCoordinator | undefined;
afterAll(async () => {
  await coord?.stop();
  dirs.forEach(rmDir);
});

const local = { host: '127.0.0.1', port: 0 };
const TICK_MS = 50;

describe('survived errors', () => {
  it('a failed audit write and a failed engine tick are logged with context and counted in /metrics', async () => {
    const dataDir = tempDir('survived');
    dirs.push(dataDir);
    const init = await initCoordinator({ dataDir, config: { federation: local, enrollment: local, http: local, rounds: { tick_ms: TICK_MS } } });
    const lines: Record<string, unknown>[] = [];
    const log = pino({ level: 'error' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
    coord = await startCoordinator(dataDir, { log });
    const c = coord;
    const auth = { authorization: `Bearer ${init.adminToken}` };
    const errorsTotal = async (): Promise<Record<string, number>> => {
      const text = await (await fetch(`${c.httpUrl}/metrics`, { headers: auth })).text();
      return Object.fromEntries([...text.matchAll(/^fedlora_errors_total\{kind="(\w+)"\} (\d+)$/gm)].map((m) => [m[1], Number(m[2])]));
    };
    // Each ask is answered within a few engine ticks (the audit hook runs once the answer is out,
    // a tick every TICK_MS); the bound only stops a broken build from waiting forever.
    const until = async (what: string, ok: (n: Record<string, number>) => boolean): Promise<Record<string, number>> => {
      for (let i = 0; i < 1000; i++) {
        const n = await errorsTotal();
        if (ok(n)) return n;
        await new Promise((r) => setTimeout(r, TICK_MS));
      }
      throw new Error(`${what}: fedlora_errors_total never got there (last log line: ${JSON.stringify(lines.at(-1))})`);
    };

    expect(await errorsTotal()).toEqual({ audit_write: 0, engine_tick: 0, upload_commit: 0 });

    // The audit log refuses every write from now on.
    c.store.db.exec(`CREATE TRIGGER forced_audit_failure BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'forced: audit write refused'); END`);

    // An admin request is still answered; its audit entry fails, is logged and counted.
    const r = await fetch(`${c.httpUrl}/api/sites/nobody/status`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ status: 'disabled' }) });
    expect(r.status).toBe(404);
    expect((await until('audit write', (n) => n.audit_write >= 1)).audit_write).toBe(1);
    const audit = lines.find((l) => l.kind === 'audit_write');
    expect(audit).toMatchObject({ level: 50, subject: 'POST /api/sites/nobody/status', action: 'admin_action', err: expect.stringMatching(/forced: audit write refused/) });

    // A running job whose spec cannot be read: the tick fails the job, whose audit entry fails
    // too, so the tick itself fails; the next ticks retry and fail again, each logged and counted.
    c.store.db.prepare(`INSERT INTO jobs (id, name, spec_json, status, created_ms, updated_ms) VALUES ('broken', 'broken', '{}', 'running', 1, 1)`).run();
    expect((await until('engine tick', (n) => n.engine_tick >= 1)).engine_tick).toBeGreaterThanOrEqual(1);
    const tick = lines.find((l) => l.kind === 'engine_tick');
    expect(tick).toMatchObject({ level: 50, msg: expect.stringMatching(/round engine tick failed/), err: expect.stringMatching(/forced: audit write refused/) });

    c.store.db.exec('DROP TRIGGER forced_audit_failure');
    expect((await fetch(`${c.httpUrl}/api/health`, { headers: auth })).status).toBe(200);
  });
});
