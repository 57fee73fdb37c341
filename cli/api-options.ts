// Options shared by every command that talks to a coordinator's HTTP API, and how they print (out).
import type { Command } from 'commander';

export const out = (v: unknown) => process.stdout.write(typeof v === 'string' ? (v.endsWith('\n') ? v : v + '\n') : JSON.stringify(v, null, 2) + '\n');

export function apiOptions(c: Command): Command {
  return c
    .option('--url <url>', 'coordinator HTTP API (default $FEDLORA_COORDINATOR_URL or http://127.0.0.1:8080)')
    .option('--token <token>', 'API token (default $FEDLORA_TOKEN, $FEDLORA_ADMIN_TOKEN or <data-dir>/admin.token); reads need one too')
    .option('--data-dir <dir>', 'a local coordinator data dir (its URL and admin token are used)');
}
