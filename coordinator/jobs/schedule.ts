// Durations of a job's schedule (schedule.every: 30d, 12h, 45m, 90s) in milliseconds.
import { fail } from '../../shared/errors.ts';

export const DURATION_PATTERN = /^([1-9][0-9]{0,6})(s|m|h|d)$/;
const UNIT_MS = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

export function durationMs(text: string, field = 'schedule.every'): number {
  const m = DURATION_PATTERN.exec(text);
  if (!m) throw fail('FEDLORA_ERR_JOB_INVALID', `${field}: "${text}" is not a duration such as 30d, 12h, 45m or 90s`);
  return Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS];
}
