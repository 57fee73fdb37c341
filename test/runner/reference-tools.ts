// The reference tools the test suite needs beyond Node, and the one policy for them: a test that
// needs a missing tool fails loudly with the command that installs it (never a skip), and
// `npm test`'s pretest step (pretest.ts) checks them all first. They come from Debian:
// PyTorch/numpy (cross-checks of the engine's maths), Chromium (the dashboard and chat page
// tests), openssl and curl (the security probes); the product itself needs none of them.
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { runProcess } from './run-process.ts';

/** Debian's python3: the one apt installs python3-torch for (FEDLORA_PYTHON overrides). */
export const PYTHON = process.env.FEDLORA_PYTHON ?? '/usr/bin/python3';

export interface ReferenceTool {
  what: string;
  /** Debian packages that provide it. */
  packages: string[];
  /** null when usable, else what is wrong (asynchronous: importing torch takes seconds, minutes under load). */
  problem(): Promise<string | null>;
}

function onPath(name: string, path = process.env.PATH ?? ''): string | null {
  for (const d of path.split(delimiter).filter(Boolean)) {
    try {
      accessSync(join(d, name), constants.X_OK);
      return join(d, name);
    } catch {
      // not in this folder
    }
  }
  return null;
}

/** The Chromium the browser tests drive: FEDLORA_CHROMIUM, else `chromium` on PATH. */
export function chromiumPath(): string | null {
  return process.env.FEDLORA_CHROMIUM ?? onPath('chromium');
}

export const TORCH: ReferenceTool = {
  what: `python3 with torch and numpy (${PYTHON})`,
  packages: ['python3-torch', 'python3-numpy', 'libopenblas0-pthread'],
  async problem() {
    const r = await runProcess(PYTHON, ['-c', 'import torch, numpy']);
    if (r.error) return `${PYTHON}: ${(r.error as NodeJS.ErrnoException).code ?? r.error.message}`;
    if (r.timedOut) return `${PYTHON} -c 'import torch, numpy' did not finish: ${r.stderr.trim().split('\n').at(-1)}`;
    if (r.status !== 0) return r.stderr.trim().split('\n').at(-1) ?? `exit ${r.status}`;
    return null;
  },
};

export const CHROMIUM: ReferenceTool = {
  what: 'chromium (headless browser)',
  packages: ['chromium'],
  async problem() {
    const p = chromiumPath();
    if (!p) return 'no `chromium` on PATH (or set FEDLORA_CHROMIUM)';
    const r = await runProcess(p, ['--version']);
    if (r.error) return `${p}: ${(r.error as NodeJS.ErrnoException).code ?? r.error.message}`;
    return r.status === 0 ? null : `${p} --version exited ${r.status}: ${r.stderr.trim().split('\n').at(-1)}`;
  },
};

/** A command-line client on PATH (the probes from outside: openssl s_client, curl). */
function cli(name: string, pkg: string, versionArgs: string[]): ReferenceTool {
  return {
    what: `${name} (a real client for the probes from outside)`,
    packages: [pkg],
    async problem() {
      const p = onPath(name);
      if (!p) return `no \`${name}\` on PATH`;
      const r = await runProcess(p, versionArgs);
      return r.status === 0 ? null : `${p} ${versionArgs.join(' ')} exited ${r.status}`;
    },
  };
}
export const OPENSSL = cli('openssl', 'openssl', ['version']);
export const CURL = cli('curl', 'curl', ['--version']);

export const REFERENCE_TOOLS = [TORCH, CHROMIUM, OPENSSL, CURL];

/** The one command that installs these tools' packages. */
export function installCommand(tools: ReferenceTool[]): string {
  return `sudo apt-get update && sudo apt-get install -y --no-install-recommends ${tools.flatMap((t) => t.packages).join(' ')}`;
}

const checked = new Map<ReferenceTool, Promise<string | null>>(); // once per test file: importing torch takes seconds

/** For a test that needs the tool: rejects, naming what is missing and the command that installs it. */
export async function requireTool(tool: ReferenceTool): Promise<void> {
  if (!checked.has(tool)) checked.set(tool, tool.problem());
  const p = await checked.get(tool);
  if (p) throw new Error(`${tool.what} is needed by this test and is not usable: ${p}. Install it with:\n  ${installCommand([tool])}`);
}
