// `npm test`'s pretest step: are the reference tools (reference-tools.ts) there? If not, install
// them with apt-get when that is permitted — FEDLORA_INSTALL_REFERENCE_TOOLS=1 (through sudo when
// not root), or by default when running as root where apt-get exists (CI, containers) — and
// otherwise stop at once with the one command to run. FEDLORA_INSTALL_REFERENCE_TOOLS=0 only checks.
import { spawnSync } from 'node:child_process';
import { installCommand, REFERENCE_TOOLS, type ReferenceTool } from './reference-tools.ts';

async function missing(): Promise<Array<{ tool: ReferenceTool; problem: string }>> {
  const problems = await Promise.all(REFERENCE_TOOLS.map((tool) => tool.problem()));
  return REFERENCE_TOOLS.flatMap((tool, i) => (problems[i] ? [{ tool, problem: problems[i]! }] : []));
}

function aptGet(args: string[], asRoot: boolean): void {
  const [cmd, argv] = asRoot ? ['apt-get', args] : ['sudo', ['-n', 'apt-get', ...args]];
  console.log(`pretest: ${cmd} ${argv.join(' ')}`);
  const r = spawnSync(cmd, argv, { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  if (r.status !== 0) throw new Error(`${cmd} ${argv.join(' ')} failed (${r.error?.message ?? `exit ${r.status}`})`);
}

async function main(): Promise<number> {
  let gaps = await missing();
  if (gaps.length === 0) return 0;
  const list = () => gaps.map((g) => `  - ${g.tool.what}: ${g.problem}`).join('\n');
  const setting = process.env.FEDLORA_INSTALL_REFERENCE_TOOLS;
  const isRoot = process.getuid?.() === 0;
  const hasApt = spawnSync('apt-get', ['--version'], { stdio: 'ignore' }).status === 0;
  const permitted = setting === '1' || (setting !== '0' && isRoot && hasApt);
  if (permitted) {
    console.log(`pretest: installing the tests' reference tools with apt-get:\n${list()}`);
    try {
      aptGet(['update', '-qq'], isRoot);
      aptGet(['install', '-y', '-qq', '--no-install-recommends', ...gaps.flatMap((g) => g.tool.packages)], isRoot);
    } catch (e) {
      console.error(`pretest: ${(e as Error).message}`);
    }
    gaps = await missing();
    if (gaps.length === 0) return 0;
  }
  console.error(`npm test needs these reference tools, which are missing:\n${list()}\nInstall them with:\n\n  ${installCommand(gaps.map((g) => g.tool))}\n`);
  return 1;
}

main().then((code) => (process.exitCode = code));
