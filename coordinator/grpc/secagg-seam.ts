// The routing point of the Federation SecAgg RPC, keyed by (job, round, stage). Each round
// engine registers its secure-aggregation state machine (coordinator/secagg/rounds.ts) with a
// predicate saying which jobs it owns, so several coordinators in one process (tests) do not
// cross. Without a handler for the job every stage answers FEDLORA_ERR_SECAGG.
import { fail } from '../../shared/errors.ts';

export interface SecAggStageInput {
  siteId: string;
  jobId: string;
  round: number;
  stage: string; // config | advertise | share | masked | unmask | status (coordinator/secagg/messages.ts)
  payload: Buffer;
}
export interface SecAggStageOutput {
  payload: Buffer;
  ready: boolean;
}
export type SecAggHandler = (m: SecAggStageInput) => Promise<SecAggStageOutput> | SecAggStageOutput;

interface Registered { handler: SecAggHandler; owns: (jobId: string) => boolean }
const registered: Registered[] = [];
let fallback: SecAggHandler | null = null;

/** A catch-all handler (used when no registered handler owns the job). */
export function setSecAggHandler(h: SecAggHandler | null): void {
  fallback = h;
}

/** Register a handler for the jobs `owns` accepts; returns the unregister function. The most
 *  recently registered owner wins. */
export function registerSecAggHandler(handler: SecAggHandler, owns: (jobId: string) => boolean): () => void {
  const r: Registered = { handler, owns };
  registered.push(r);
  return () => {
    const i = registered.indexOf(r);
    if (i >= 0) registered.splice(i, 1);
  };
}

export async function routeSecAgg(m: SecAggStageInput): Promise<SecAggStageOutput> {
  for (let i = registered.length - 1; i >= 0; i--) {
    let mine = false;
    try {
      mine = registered[i].owns(m.jobId);
    } catch {
      mine = false; // e.g. its store was closed without unregistering
    }
    if (mine) return registered[i].handler(m);
  }
  if (!fallback) throw fail('FEDLORA_ERR_SECAGG', `secure aggregation is not available for job ${m.jobId} on this coordinator (round ${m.round}, stage ${m.stage})`);
  return fallback(m);
}
