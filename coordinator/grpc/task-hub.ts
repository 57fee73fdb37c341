// Live StreamTasks streams, by site. A stream gets every open task of its site when it
// connects (so a site that reconnects, or connects after the round opened, gets its task
// again) and each new task as rounds open; cancellations go out as TASK_KIND_CANCEL.
// Open tasks are the round's TRAIN tasks (table tasks) and the site's side tasks (table
// side_tasks: the final EVALUATE of a completed job, cross-eval UPLOAD_LOCAL / CROSS_EVAL), so a
// site offline when a side task was made, or a coordinator restarted since, still gets it.
import type * as grpc from '@grpc/grpc-js';
import type { Task, TaskStreamRequest } from '../../shared/proto.ts';
import type { RoundEngine } from '../rounds/index.ts';
import { openSideTasksFor, setSideTaskStatus, sideTaskMessage } from '../store/side-tasks.ts';

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
  /** A completed job has final EVALUATE side tasks (made with the job's completion, see
   *  RoundEngine.endJob): the connected sites get them now, the others when they connect. */
  private readonly onJob = () => {
    for (const siteId of [...this.streams.keys()]) this.push(siteId);
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

  /** Send the site's open tasks (round tasks, then side tasks) that a stream has not had yet. */
  push(siteId: string): void {
    const m = this.streams.get(siteId);
    if (!m) return;
    const store = this.engine.store;
    const tasks = store.openTasksFor(siteId);
    const side = openSideTasksFor(store.db, siteId);
    for (const [call, sent] of m) {
      for (const t of tasks) {
        if (sent.has(t.task_id)) continue;
        sent.add(t.task_id);
        call.write(this.engine.taskMessage(t));
        if (t.status === 'pending') store.setTaskStatus(t.task_id, 'delivered');
      }
      for (const t of side) {
        if (sent.has(t.task_id)) continue;
        sent.add(t.task_id);
        call.write(sideTaskMessage(t));
        if (t.status === 'pending') setSideTaskStatus(store.db, t.task_id, 'delivered', this.engine.now());
      }
    }
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
