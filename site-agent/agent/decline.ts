// Declining a task the site will not do: recorded in the site's audit log, then said to the
// coordinator (which counts it and moves on without this site), one way for every kind of task.
import type { AuditLog } from '../../shared/audit.ts';
import type { FederationWire } from './wire.ts';

export interface DeclineDeps {
  siteId: string;
  audit: Pick<AuditLog, 'append'>;
  wire: Pick<FederationWire, 'declineTask'>;
}

export async function declineTask(d: DeclineDeps, task: { taskId: string; jobId: string; round: number }, code: string, reason: string): Promise<void> {
  d.audit.append(d.siteId, 'task_declined', `${task.jobId}/${task.round}`, { task_id: task.taskId, code, reason });
  await d.wire.declineTask(task.taskId, reason, code);
}
