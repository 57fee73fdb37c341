// Shared by the deploy-kit checks: paths, and running the real CLI with --help.
import { join } from 'node:path';
import type { Command } from 'commander';
import { TEST_TIMEOUT_MS } from '../runner/limits.ts';
import { runProcess } from '../runner/run-process.ts';

export const REPO = join(import.meta.dirname, '..', '..');
export const DEPLOY = join(REPO, 'deploy');

/** Run `node cli/bin.mjs ARGS` from the repo, asynchronously; returns status and output. */
export async function fedlora(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const r = await runProcess(process.execPath, [join(REPO, 'cli/bin.mjs'), ...args], { timeoutMs: TEST_TIMEOUT_MS / 2, cwd: REPO });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The subcommand words of a fedlora argv (everything before the first option). */
export function subcommandOf(args: string[]): string[] {
  const i = args.findIndex((a) => a.startsWith('-'));
  return i < 0 ? args : args.slice(0, i);
}

/** Options (--name) used in an argv. */
export const optionsOf = (args: string[]): string[] => args.filter((a) => /^--[a-z]/.test(a)).map((a) => a.split('=')[0]);

/**
 * Check one fedlora invocation as written in a kit file against the real command tree
 * (cli/main.ts buildProgram, in process: spawning the CLI costs ~1.5 s each): the subcommand
 * path exists, positional arguments fit, and every option used is one of the command's.
 * Returns a problem description, or null. (The systemd test also runs each ExecStart with
 * --help for real.)
 */
export async function checkInvocation(args: string[], where: string): Promise<string | null> {
  const { buildProgram } = await import('../../cli/main.ts');
  let cmd: Command = buildProgram();
  const words = subcommandOf(args);
  let i = 0;
  for (; i < words.length; i++) {
    const next = cmd.commands.find((c) => c.name() === words[i] || c.aliases().includes(words[i]));
    if (!next) break;
    cmd = next;
  }
  const path = words.slice(0, i).join(' ');
  if (!path) return `${where}: \`fedlora ${words[0] ?? ''}\` is not a command`;
  if (cmd.commands.length && i < words.length) return `${where}: \`fedlora ${path} ${words[i]}\` is not a command`;
  if (cmd.commands.length) return `${where}: \`fedlora ${path}\` needs a subcommand`;
  for (const opt of optionsOf(args)) {
    if (opt === '--help') continue;
    if (!cmd.options.some((o) => o.long === opt || o.long === opt.replace(/^--no-/, '--'))) return `${where}: \`fedlora ${path}\` has no option ${opt}`;
  }
  const positional = words.length - i;
  const spec = cmd.registeredArguments;
  const max = spec.some((a) => a.variadic) ? Infinity : spec.length;
  const min = spec.filter((a) => a.required).length;
  // positional words after options (e.g. `ingest --format csv FILE`) are counted too
  const trailing = args.slice(args.findIndex((a) => a.startsWith('-')) < 0 ? args.length : args.findIndex((a) => a.startsWith('-')));
  const optionTakesValue = (o: string) => cmd.options.find((x) => x.long === o)?.required || cmd.options.find((x) => x.long === o)?.optional;
  let extra = 0;
  for (let k = 0; k < trailing.length; k++) {
    const a = trailing[k];
    if (a.startsWith('--')) {
      if (!a.includes('=') && optionTakesValue(a.split('=')[0])) {
        k++;
        // a variadic option (--san a b) takes the following words too
        if (cmd.options.find((x) => x.long === a)?.variadic) while (k + 1 < trailing.length && !trailing[k + 1].startsWith('-')) k++;
      }
    } else extra++;
  }
  if (positional + extra > max) return `${where}: \`fedlora ${path}\` takes at most ${spec.length} argument(s), got ${positional + extra}`;
  if (positional + extra < min) return `${where}: \`fedlora ${path}\` needs ${min} argument(s), got ${positional + extra}`;
  for (const o of cmd.options) {
    if (o.mandatory && !optionsOf(args).includes(o.long!)) return `${where}: \`fedlora ${path}\` needs ${o.long}`;
  }
  return null;
}
