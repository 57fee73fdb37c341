import type { CliGroups } from '../groups.ts';

export function register(_g: CliGroups): void {
  // filled in by the area that owns these commands
}
