// Job ids name folders (<dataDir>/manifests/<job>/), task ids and log lines, and an operator may
// choose one (`fedlora job submit --id`, POST /api/jobs?id=) — e.g. to run the same job in two
// federations. One rule everywhere: lowercase letters, digits, '.', '_', '-', at most 64, and a
// letter or digit first (so never '.', '..' or a hidden name).
import { fail } from '../../shared/errors.ts';

const JOB_ID_PATTERN = /^[a-z0-9][a-z0-9._-]{0,63}$/;

/** Throw FEDLORA_ERR_INVALID_ARGUMENT naming `where` unless `id` is a valid job id. */
export function checkJobId(id: string, where: string): string {
  if (!JOB_ID_PATTERN.test(id)) {
    throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `${where}: job id ${JSON.stringify(id)} is not valid: use 1-64 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit (${JOB_ID_PATTERN.source})`);
  }
  return id;
}
