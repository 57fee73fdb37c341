// Side tasks (coordinator/store/side-tasks.ts) through the real coordinator over mutual TLS:
// the final EVALUATE of a completed job reaches a site that was offline when the job completed,
// its metrics are stored once (a re-sent task done again is acknowledged, not stored twice), and
// EVALUATE tasks end done / declined / expired. Sites here are raw task streams; they answer
// with the site agent's own reportTaskDone (site-agent/agent/cross-eval.ts).
import { describe, it, expect, afterAll } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import YAML from 'yaml';
import { createFederationClient, type FederationClient, type MetricsReport, type Task } from '../../shared/proto.ts';
import { createSiteChannelCredentials } from '../../shared/tls.ts';
import { parseCoordinatorConfig } from '../../coordinator/config.ts';
import { expireSideTasks, sideTask, SIDE_TASK_EXPIRE_MS } from '../../coordinator/store/side-tasks.ts';
import { reportTaskDone } from '../../site-agent/agent/cross-eval.ts';
import type { Federation } from '../secagg-e2e/helpers.ts';
import { IDS, finishedJob, sleep } from './helpers.ts';
import { TEST_TIMEOUT_MS } from '../runner/limits.ts';

const feds: Federation[] = [];
afterAll(async () => {
  for (const f of feds) await f.close();
});

/** One site's task stream: every task it is sent, in order. */
function taskStream(fed: Federation, siteId: string): { tasks: Task[]; client: FederationClient; close(): void } {
  const site = fed.sites.find((s) => s.id === siteId)!;
  const client = createFederationClient(fed.coord.federationEndpoint, createSiteChannelCredentials(site.dir));
  const stream = client.streamTasks({ agentVersion: 'test', maxParallelTasks: 1 });
  const tasks: Task[] = [];
  stream.on('data', (t: Task) => tasks.push(t));
  stream.on('error', () => undefined);
  return { tasks, client, close: () => (stream.cancel(), client.close()) };
}

async function until<T>(what: string, f: () => T | undefined | false, ms = 10_000): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = f();
    if (v) return v;
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

const report = (client: FederationClient, r: MetricsReport) =>
  new Promise<string>((resolve, reject) => client.reportMetrics(r, new grpc.Metadata(), {}, (e, res) => (e ? reject(e) : resolve(res!.message))));

describe('final EVALUATE as a persisted side task', () => {
  it('reaches sites that were offline when the job completed; done / declined / expired; no duplicate metrics', async () => {
    const fed = await finishedJob('job-e');
    feds.push(fed);
    const db = fed.coord.store.db;
    const v = fed.coord.store.adapterVersions('job-e').at(-1)!.version;
    expect(v).toBeGreaterThan(0);
    // No site had a task stream when the job completed: one pending EVALUATE per participant.
    const rows = () => db.prepare(`SELECT task_id, site_id, kind, status FROM side_tasks WHERE job_id = 'job-e' ORDER BY site_id`).all() as Array<{ task_id: string; site_id: string; kind: string; status: string }>;
    expect(rows()).toEqual(IDS.map((id) => ({ task_id: `eval-job-e-v${v}-${id}`, site_id: id, kind: 'TASK_KIND_EVALUATE', status: 'pending' })));

    // site-a connects later: gets the EVALUATE of the final version, evaluates, reports, done.
    const a = taskStream(fed, 'site-a');
    const task = await until('site-a EVALUATE', () => a.tasks.find((t) => t.kind === 'TASK_KIND_EVALUATE'));
    expect(task).toMatchObject({ taskId: `eval-job-e-v${v}-site-a`, jobId: 'job-e', round: v, globalAdapter: { jobId: 'job-e', version: v } });
    expect(sideTask(db, task.taskId)!.status).toBe('delivered');
    const evalReport: MetricsReport = {
      taskId: task.taskId, jobId: 'job-e', round: v, phase: 'eval',
      metrics: [{ kind: 'global', name: 'loss', value: 1.25, count: 40, modelOwner: '', adapterVersion: v }, { kind: 'global', name: 'accuracy', value: 0.6, count: 20, modelOwner: '', adapterVersion: v }],
    };
    expect(await report(a.client, evalReport)).toBe('2 metric(s) stored');
    const siteA = fed.sites.find((s) => s.id === 'site-a')!;
    await reportTaskDone(siteA.grpc, task);
    expect(sideTask(db, task.taskId)!.status).toBe('done');
    const stored = () => fed.coord.store.metrics('job-e', { site: 'site-a', kind: 'global' }).filter((m) => m.adapter_version === v);
    expect(stored().map((m) => [m.metric, m.value, m.task_id])).toEqual([['accuracy', 0.6, task.taskId], ['loss', 1.25, task.taskId]]);

    // The site restarted and did the task again (it had it before its restart): acknowledged, not stored twice.
    expect(await report(a.client, evalReport)).toBe('0 metric(s) stored');
    await reportTaskDone(siteA.grpc, task);
    expect(stored()).toHaveLength(2);
    // A done task is not sent again on a new connection.
    a.close();
    const a2 = taskStream(fed, 'site-a');
    await sleep(400);
    expect(a2.tasks.map((t) => t.taskId)).not.toContain(task.taskId);
    a2.close();

    // site-b declines its EVALUATE: declined, audited, and declining twice is refused.
    const b = taskStream(fed, 'site-b');
    const tb = await until('site-b EVALUATE', () => b.tasks.find((t) => t.kind === 'TASK_KIND_EVALUATE'));
    const siteB = fed.sites.find((s) => s.id === 'site-b')!;
    await siteB.grpc.declineTask(tb.taskId, 'held-out set unavailable', 'FEDLORA_ERR_POLICY');
    expect(sideTask(db, tb.taskId)).toMatchObject({ status: 'declined', decline_code: 'FEDLORA_ERR_POLICY', decline_reason: 'held-out set unavailable' });
    const audit = db.prepare(`SELECT actor, subject, details FROM audit_log WHERE action = 'task_declined'`).all() as Array<{ actor: string; subject: string; details: string }>;
    expect(audit.map((r) => [r.actor, r.subject, JSON.parse(r.details).kind])).toEqual([['site-b', tb.taskId, 'TASK_KIND_EVALUATE']]);
    await expect(siteB.grpc.declineTask(tb.taskId, 'again', 'X')).rejects.toMatchObject({ code: 'FEDLORA_ERR_ROUND_CLOSED' });
    // Another site cannot decline (or learn about) site-b's side task.
    await expect(siteA.grpc.declineTask(`eval-job-e-v${v}-site-c`, 'not mine', 'X')).rejects.toMatchObject({ code: 'FEDLORA_ERR_NOT_FOUND' });
    b.close();

    // site-c never came: its EVALUATE expires after side_tasks.expire_ms, and is then not sent.
    expect(parseCoordinatorConfig({}).side_tasks.expire_ms).toBe(SIDE_TASK_EXPIRE_MS);
    const now = Date.now();
    expect(expireSideTasks(db, now, SIDE_TASK_EXPIRE_MS)).toBe(0); // too young
    expect(expireSideTasks(db, now + SIDE_TASK_EXPIRE_MS + 1000, SIDE_TASK_EXPIRE_MS)).toBe(1);
    expect(rows().map((r) => r.status)).toEqual(['done', 'declined', 'expired']);
    const c = taskStream(fed, 'site-c');
    await sleep(400);
    expect(c.tasks.filter((t) => t.kind === 'TASK_KIND_EVALUATE')).toEqual([]);
    c.close();
    // A report for an expired task is still data (stored once), but does not revive the task.
    const siteC = fed.sites.find((s) => s.id === 'site-c')!;
    await siteC.grpc.reportMetrics({ taskId: `eval-job-e-v${v}-site-c`, jobId: 'job-e', round: v, phase: 'eval', metrics: [{ kind: 'global', name: 'loss', value: 2, count: 10, modelOwner: '', adapterVersion: v }] });
    await reportTaskDone(siteC.grpc, { taskId: `eval-job-e-v${v}-site-c`, jobId: 'job-e', round: v });
    expect(sideTask(db, `eval-job-e-v${v}-site-c`)!.status).toBe('expired');
  }, TEST_TIMEOUT_MS);

  it('the coordinator expires side tasks on its tick (side_tasks.expire_ms in coordinator.yaml)', async () => {
    const fed = await finishedJob('job-t');
    feds.push(fed);
    const file = join(fed.dataDir, 'coordinator.yaml');
    const cfg = YAML.parse(readFileSync(file, 'utf8'));
    writeFileSync(file, YAML.stringify({ ...cfg, side_tasks: { expire_ms: 1000 } }));
    await sleep(1100);
    await fed.restart();
    const db = fed.coord.store.db;
    const statuses = await until('expired EVALUATE tasks', () => {
      const s = (db.prepare(`SELECT status FROM side_tasks WHERE job_id = 'job-t'`).all() as Array<{ status: string }>).map((r) => r.status);
      return s.length === 3 && s.every((x) => x === 'expired') && s;
    });
    expect(statuses).toEqual(['expired', 'expired', 'expired']);
  }, TEST_TIMEOUT_MS);
});
