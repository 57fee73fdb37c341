// A site declines a task (its policy refuses, it cannot train): a round task becomes 'declined'
// (the round may close sooner: every selected site answered), a side task (EVALUATE,
// cross-eval) likewise; either way with the site's code and reason in the audit log.
import { fail } from '../../shared/errors.ts';
import type { CoordinatorStore } from '../store/store.ts';
import { isOpen, setSideTaskStatus, sideTask } from '../store/side-tasks.ts';

/** Returns true when a round task was declined (the rounds should be advanced). */
export function declineTask(store: CoordinatorStore, now: () => number, siteId: string, taskId: string, reason: string, code: string): boolean {
  const why = { code: code.slice(0, 100), reason: reason.slice(0, 1000) };
  const side = sideTask(store.db, taskId);
  if (side && side.site_id === siteId) {
    if (!isOpen(side)) throw fail('FEDLORA_ERR_ROUND_CLOSED', `task ${taskId} is already ${side.status}`);
    store.tx(() => {
      setSideTaskStatus(store.db, taskId, 'declined', now(), why);
      store.audit.append(siteId, 'task_declined', taskId, { ...why, kind: side.kind }, new Date(now()));
    });
    return false;
  }
  const t = store.task(taskId);
  if (!t || t.site_id !== siteId) throw fail('FEDLORA_ERR_NOT_FOUND', `DeclineRequest.task_id: no task ${taskId} for site ${siteId}`);
  if (t.status !== 'pending' && t.status !== 'delivered') throw fail('FEDLORA_ERR_ROUND_CLOSED', `task ${taskId} is already ${t.status}`);
  store.tx(() => {
    store.setTaskStatus(taskId, 'declined', why);
    store.audit.append(siteId, 'task_declined', taskId, why, new Date(now()));
  });
  return true;
}
