// Errors the coordinator survives on purpose — a failed audit write must not take the API or a
// site's call down, a failed engine tick is retried by the next tick, a cut upload whose written
// chunks could not be committed is resumed from the last commit — but never silently: each
// one is logged (pino, with its context) and counted per kind for /metrics
// (fedlora_errors_total{kind}; a process counter, so it restarts from 0 with the coordinator).

const SURVIVED_ERROR_KINDS = ['audit_write', 'engine_tick', 'upload_commit'] as const;
export type SurvivedErrorKind = (typeof SURVIVED_ERROR_KINDS)[number];

/** The part of a pino logger this needs. */
export interface ErrorLog {
  error(obj: Record<string, unknown>, msg: string): void;
}

export interface SurvivedErrors {
  /** Log the error with its context and count it under `kind`. */
  record(kind: SurvivedErrorKind, err: unknown, context?: Record<string, unknown>): void;
  /** Errors recorded so far, per kind (every kind present, 0 when none). */
  counts(): Record<SurvivedErrorKind, number>;
}

const MESSAGES: Record<SurvivedErrorKind, string> = {
  audit_write: 'audit write failed (the action itself went ahead)',
  engine_tick: 'round engine tick failed (the next tick retries)',
  upload_commit: 'committing a cut upload failed (the site resumes from the last chunk that was committed)',
};

export function survivedErrors(log: ErrorLog): SurvivedErrors {
  const n = Object.fromEntries(SURVIVED_ERROR_KINDS.map((k) => [k, 0])) as Record<SurvivedErrorKind, number>;
  return {
    record(kind, err, context = {}) {
      n[kind]++;
      const e = err as { message?: string; code?: string } | undefined;
      log.error({ kind, ...context, err: e?.message ?? String(err), code: e?.code }, MESSAGES[kind]);
    },
    counts: () => ({ ...n }),
  };
}
