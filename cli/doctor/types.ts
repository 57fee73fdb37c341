// `fedlora doctor`: one list of checks, each OK / WARN / FAIL / SKIP with what to fix.
// FAIL means the service cannot work as configured (exit code 1); WARN means it works but
// will not for long (a certificate about to expire, little disk); SKIP means the check could
// not run for lack of information (e.g. no coordinator URL for the clock check).

export type CheckStatus = 'OK' | 'WARN' | 'FAIL' | 'SKIP';

export interface CheckResult {
  /** short id, e.g. "certificate", "reachability", "disk" */
  name: string;
  status: CheckStatus;
  /** what was found */
  detail: string;
  /** what to do about it (WARN/FAIL) */
  fix?: string;
}

export interface DoctorReport {
  side: 'site' | 'coordinator';
  dir: string;
  checks: CheckResult[];
  /** true when no check FAILed */
  ok: boolean;
}

export interface CommonDoctorOptions {
  /** Override "now" (tests of expiry). */
  now?: number;
  /** Timeout of each network probe (default 5000 ms). */
  timeoutMs?: number;
  /** Disk thresholds in bytes: FAIL below minFree, WARN below warnFree. */
  minFreeBytes?: number;
  warnFreeBytes?: number;
  /** Certificates expiring within this many days give a WARN (default 14). */
  certWarnDays?: number;
}

export const report = (side: DoctorReport['side'], dir: string, checks: CheckResult[]): DoctorReport => ({
  side, dir, checks, ok: !checks.some((c) => c.status === 'FAIL'),
});
