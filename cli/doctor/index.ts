// `fedlora doctor`: public entry points (see types.ts for the OK/WARN/FAIL/SKIP meaning).
export { runSiteDoctor, type SiteDoctorOptions } from './site.ts';
export { runCoordinatorDoctor, type CoordinatorDoctorOptions } from './coordinator.ts';
export { checkCertificateFile, checkClockSkew, checkDisk, checkExecutionProviders, probeTls } from './probes.ts';
export type { CheckResult, CheckStatus, DoctorReport } from './types.ts';
import type { DoctorReport } from './types.ts';

/** Human-readable report: one line per check, then the fix indented under it. */
export function formatDoctorReport(r: DoctorReport): string {
  const lines = [`fedlora doctor: ${r.side} ${r.dir}`];
  const w = Math.max(...r.checks.map((c) => c.name.length));
  for (const c of r.checks) {
    lines.push(`[${c.status}]${' '.repeat(5 - c.status.length)}${c.name.padEnd(w)}  ${c.detail}`);
    if (c.fix && c.status !== 'OK') lines.push(`${' '.repeat(w + 9)}fix: ${c.fix}`);
  }
  const n = (s: string) => r.checks.filter((c) => c.status === s).length;
  lines.push(`${r.ok ? 'healthy' : 'NOT healthy'}: ${n('OK')} ok, ${n('WARN')} warning(s), ${n('FAIL')} failure(s), ${n('SKIP')} skipped`);
  return lines.join('\n');
}
