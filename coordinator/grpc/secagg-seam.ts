// SEAM for secure aggregation (C2's shared/secagg server stages). The Federation SecAgg RPC
// routes here keyed by (job, round, stage); until a handler is installed every stage answers
// FEDLORA_ERR_SECAGG, and jobs with privacy.secure_aggregation get no masked aggregation.
import { fail } from '../../shared/errors.ts';

export interface SecAggStageInput {
  siteId: string;
  jobId: string;
  round: number;
  stage: string; // advertise | share | collect_shares | unmask | status
  payload: Buffer;
}
export interface SecAggStageOutput {
  payload: Buffer;
  ready: boolean;
}
export type SecAggHandler = (m: SecAggStageInput) => Promise<SecAggStageOutput> | SecAggStageOutput;

let handler: SecAggHandler | null = null;

export function setSecAggHandler(h: SecAggHandler | null): void {
  handler = h;
}

export async function routeSecAgg(m: SecAggStageInput): Promise<SecAggStageOutput> {
  if (!handler) throw fail('FEDLORA_ERR_SECAGG', `secure aggregation is not available on this coordinator (job ${m.jobId} round ${m.round}, stage ${m.stage})`);
  return handler(m);
}
