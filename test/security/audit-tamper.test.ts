// The coordinator's tamper-evident audit log on a real federation run (mutual TLS on
// 127.0.0.1), checked with the real CLI: `fedlora audit verify` passes on the untouched file,
// then an attacker with file access drops the append-only trigger and edits a row — verify
// names that entry and exits 1; re-hashing the edited row moves the break to the next entry;
// (the site's `site_audit` table: audit-site-cli.test.ts). No secret is ever logged.
import { describe, it, expect, afterAll } from 'vitest';
import Database from 'better-sqlite3-multiple-ciphers';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { unary } from '../../shared/proto.ts';
import { AuditLog, canonicalJson } from '../../shared/audit.ts';
import { issueJoinToken } from '../../coordinator/enrollment.ts';
import { decodeJoinToken } from '../../certs/tokens.ts';
import { rawSpec, fakeDelta, encodeDelta } from '../coordinator/helpers.ts';
import { liveCoordinator, nextTask, submit, signFor, updateMessages, sha256Hex, fedlora, type LiveCoordinator } from './helpers.ts';

let live: LiveCoordinator | undefined;
afterAll(async () => live?.cleanup());

describe('audit log against tampering', () => {
  it('audits a federation run; `fedlora audit verify` catches an edited row and a re-hashed one', async () => {
    live = await liveCoordinator(['site-a']);
    const { coord, dataDir, adminToken, siteDirs } = live;
    const client = live.connect('site-a');
    await unary(client.heartbeat.bind(client), { state: 'idle' });
    const stream = client.streamTasks({});
    const taskP = nextTask(stream);
    // an unauthenticated admin write, then a real one
    expect((await fetch(`${coord.httpUrl}/api/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(rawSpec()) })).status).toBe(401);
    const res = await fetch(`${coord.httpUrl}/api/jobs?id=job-aud`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${adminToken}` }, body: JSON.stringify(rawSpec({ rounds: 1, min_sites: 1 })) });
    expect(res.status).toBe(201);
    const task = await taskP;
    const { layout } = coord.engine.jobInfo('job-aud');
    const bytes = encodeDelta(layout.update, fakeDelta(layout.update, 'site-a', 1));
    const f = { updateId: 'u-aud', jobId: 'job-aud', round: 1, baseVersion: 0, sha256: sha256Hex(bytes), numExamples: 12 };
    expect(await submit(client, updateMessages({ ...f, taskId: task.taskId, signature: signFor(siteDirs['site-a'], f), updateNorm: 3.25 }, bytes))).toMatchObject({ complete: true });
    expect(await coord.engine.waitForJob('job-aud', 20_000)).toMatchObject({ status: 'completed' });
    const extra = issueJoinToken(coord.store.db, { siteId: 'site-z', ttlMs: 60_000, enrollEndpoint: coord.enrollmentEndpoint, caSha256: 'a'.repeat(64) });
    stream.cancel();
    await live.stop(); // the coordinator is stopped; the data dir stays for the attacker

    // the whole story is in the log, in order
    const db0 = new Database(join(dataDir, 'coordinator.sqlite'));
    const entries = new AuditLog(db0).list();
    const actions = entries.map((e) => e.action);
    for (const a of ['token_issued', 'enroll', 'admin_denied', 'job_submitted', 'admin_action', 'publish', 'task', 'update_received', 'aggregate', 'job_completed']) expect(actions).toContain(a);
    expect(actions.indexOf('enroll')).toBeLessThan(actions.indexOf('job_submitted'));
    expect(actions.indexOf('update_received')).toBeLessThan(actions.indexOf('aggregate'));
    expect(entries.find((e) => e.action === 'admin_action')).toMatchObject({ actor: 'admin:init', subject: 'POST /api/jobs', details: { status: 201, query: 'id=job-aud' } });
    expect(entries.find((e) => e.action === 'admin_denied')).toMatchObject({ actor: 'anonymous', details: { status: 401, token_presented: false } });
    expect(entries.find((e) => e.action === 'update_received')!.details).toMatchObject({ site_norm: 3.25, examples: 12, sha256: f.sha256 });
    // secrets never reach the log: not the admin token, not a join token (nor its secret part)
    const dump = JSON.stringify(db0.prepare('SELECT * FROM audit_log').all());
    expect(dump).not.toContain(adminToken);
    expect(dump).not.toContain(extra.token);
    const { secret } = decodeJoinToken(extra.token);
    expect(secret.length).toBeGreaterThan(16);
    expect(dump).not.toContain(secret);
    db0.close();

    // untouched: OK, exit 0; list filters by action
    const ok = await fedlora(['audit', 'verify', '--data-dir', dataDir]);
    expect(ok.status).toBe(0);
    expect(ok.stdout).toMatch(new RegExp(`audit chain OK: ${entries.length} entries`));
    const listed = await fedlora(['audit', 'list', '--data-dir', dataDir, '--action', 'enroll']);
    expect(listed.status).toBe(0);
    expect(listed.stdout.trim().split('\n')).toHaveLength(1);
    expect(listed.stdout).toMatch(/\tsite-a\tenroll\tsite-a\t/);
    expect((await fedlora(['audit', 'list', '--data-dir', dataDir, '--limit', '2'])).stdout.trim().split('\n').map((l) => Number(l.split('\t')[0]))).toEqual([entries.length - 1, entries.length]);

    // the attacker: drop the append-only trigger, lower the example count of the received update
    const target = entries.find((e) => e.action === 'update_received')!;
    const db = new Database(join(dataDir, 'coordinator.sqlite'));
    db.exec('DROP TRIGGER audit_log_no_update');
    db.prepare('UPDATE audit_log SET details = ? WHERE seq = ?').run(canonicalJson({ ...target.details, examples: 1200 }), target.seq);
    db.close();
    const broken = await fedlora(['audit', 'verify', '--data-dir', dataDir]);
    expect(broken.status).toBe(1);
    expect(broken.stdout).toContain(`BROKEN at entry ${target.seq}: entry content does not match its hash (edited)`);
    expect(broken.stdout).toContain('update_received u-aud');

    // a smarter attacker also recomputes that row's hash: the next entry's link breaks instead
    const db2 = new Database(join(dataDir, 'coordinator.sqlite'));
    db2.exec('DROP TRIGGER IF EXISTS audit_log_no_update'); // verify re-created it
    const row = db2.prepare('SELECT * FROM audit_log WHERE seq = ?').get(target.seq) as Record<string, string>;
    const body = canonicalJson({ seq: target.seq, ts: row.ts, actor: row.actor, action: row.action, subject: row.subject, details: JSON.parse(row.details) });
    db2.prepare('UPDATE audit_log SET hash = ? WHERE seq = ?').run(createHash('sha256').update(row.prev_hash).update(body).digest('hex'), target.seq);
    db2.close();
    const json = await fedlora(['audit', 'verify', '--data-dir', dataDir, '--json']);
    expect(json.status).toBe(1);
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: false, table: 'audit_log', firstBroken: { seq: target.seq + 1, reason: 'prev_hash does not match the previous entry' } });
  });
});
