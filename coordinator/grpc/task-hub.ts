// Live StreamTasks streams, by site. A stream gets every open task of its site when it
// connects (so a site that reconnects, or connects after the round opened, gets its task
// again) and each new task as rounds open; cancellations go out as TASK_KIND_CANCEL.
import type * as grpc from '@grpc/grpc-js';
import type { Task, TaskStreamRequest } from '../../shared/proto.ts';
import type { RoundEngine } from '../rounds/engine.ts';
import type { TaskRow } from '../store/store.ts';

type Stream = grpc.ServerWritableStream<TaskStreamRequest, Task>;

export class TaskHub {
  private readonly streams = new Map<string, Map<Stream, Set<string>>>();
  private readonly onTasks = (sites: string[]) => sites.forEach((s) => this.push(s));
  private readonly onCancel = (items: { siteId: string; taskId: string }[]) => {
    for (const { siteId, taskId } of items) {
      for (const [call, sent] of this.streams.get(siteId) ?? []) {
        if (!sent.has(taskId)) continue;
        call.write(cancelTask(taskId));
      }
    }
  };
  /** When a job completes, every connected site that took part evaluates the final version on
   *  its held-out data (an EVALUATE task; the last round's TRAIN tasks evaluated only the
   *  versions before it). Sites offline at that moment miss it; the metrics are then absent. */
  private readonly onJob = (jobId: string) => {
    const j = this.engine.store.job(jobId);
    if (!j || j.status !== 'completed') return;
    const versions = this.engine.store.adapterVersions(jobId).filter((v) => !v.owner_site);
    const last = versions.at(-1);
    if (!last || last.version === 0) return;
    const lastTaskBySite = new Map<string, TaskRow>();
    for (const r of this.engine.store.rounds(jobId)) {
      for (const t of this.engine.store.roundTasks(jobId, r.round, r.attempt)) lastTaskBySite.set(t.site_id, t);
    }
    for (const [siteId, t] of lastTaskBySite) {
      const base = this.engine.taskMessage(t);
      const msg: Task = {
        ...base,
        taskId: `eval-${jobId}-v${last.version}-${siteId}`,
        kind: 'TASK_KIND_EVALUATE',
        round: last.version,
        globalAdapter: { jobId, version: last.version, sha256: last.sha256, sizeBytes: last.size, manifestSha256: last.manifest_sha256 },
      };
      for (const call of this.streams.get(siteId)?.keys() ?? []) call.write(msg);
    }
  };

  constructor(private readonly engine: RoundEngine) {
    engine.on('tasks', this.onTasks);
    engine.on('cancel', this.onCancel);
    engine.on('job', this.onJob);
  }

  attach(siteId: string, call: Stream): void {
    let m = this.streams.get(siteId);
    if (!m) this.streams.set(siteId, (m = new Map()));
    m.set(call, new Set());
    const detach = () => {
      m!.delete(call);
      if (m!.size === 0) this.streams.delete(siteId);
    };
    call.on('cancelled', detach);
    call.on('close', detach);
    call.on('error', detach);
    this.push(siteId);
  }

  connected(siteId: string): number {
    return this.streams.get(siteId)?.size ?? 0;
  }

  /** Send the site's open tasks that a stream has not had yet. */
  push(siteId: string): void {
    const m = this.streams.get(siteId);
    if (!m) return;
    const tasks = this.engine.store.openTasksFor(siteId);
    for (const [call, sent] of m) {
      for (const t of tasks) {
        if (sent.has(t.task_id)) continue;
        sent.add(t.task_id);
        call.write(this.engine.taskMessage(t));
        if (t.status === 'pending') this.engine.store.setTaskStatus(t.task_id, 'delivered');
      }
    }
  }

  /** Write an ephemeral task (not a tasks-table row, e.g. cross-eval) to the site's live
   *  streams; returns how many streams got it (0 = the site is offline and misses it). */
  send(siteId: string, task: Task): number {
    let n = 0;
    for (const call of this.streams.get(siteId)?.keys() ?? []) {
      call.write(task);
      n++;
    }
    return n;
  }

  close(): void {
    this.engine.off('tasks', this.onTasks);
    this.engine.off('cancel', this.onCancel);
    this.engine.off('job', this.onJob);
    for (const m of this.streams.values()) for (const call of m.keys()) call.end();
    this.streams.clear();
  }
}

function cancelTask(taskId: string): Task {
  return {
    taskId, jobId: '', round: 0, kind: 'TASK_KIND_CANCEL', baseModel: null, lora: null, train: null, globalAdapter: null, privacy: null,
    deadlineUnixMs: 0, selectedSites: 0, aggregation: '', payloadKind: '', strategyConfig: {}, peerAdapters: [], peerSites: [], evaluateBase: false,
  };
}
