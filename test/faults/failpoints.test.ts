// shared/failpoints.ts: the FEDLORA_FAILPOINTS parser (clear FEDLORA_ERR_CONFIG naming the bad
// entry), the count/term sequencing, the stderr line, pause, and exit(137) in a real child.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { FAILPOINTS_ENV, failpoint, loadFailpoints, parseFailpoints, resetFailpoints } from '../../shared/failpoints.ts';
import { FedloraError } from '../../shared/errors.ts';
import { runProcess } from '../runner/run-process.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

function refused(spec: string): FedloraError {
  try {
    parseFailpoints(spec);
  } catch (e) {
    return e as FedloraError;
  }
  throw new Error(`"${spec}" was accepted`);
}

afterEach(() => {
  resetFailpoints();
  vi.restoreAllMocks();
});

describe('failpoints', () => {
  it('parses names, counts and chained terms', () => {
    const t = parseFailpoints(' coordinator.aggregate.computed=pause(30000) ; coordinator.publish.written=2*off->exit(3); ');
    expect(t.get('coordinator.aggregate.computed')).toEqual([{ count: Infinity, action: { kind: 'pause', ms: 30000 }, text: 'pause(30000)' }]);
    expect(t.get('coordinator.publish.written')).toEqual([
      { count: 2, action: { kind: 'off' }, text: 'off' },
      { count: Infinity, action: { kind: 'exit', code: 3 }, text: 'exit(3)' },
    ]);
    expect(parseFailpoints('coordinator.publish.written=exit').get('coordinator.publish.written')![0].action).toEqual({ kind: 'exit', code: 137 });
    expect(parseFailpoints('').size).toBe(0);
  });

  it('refuses a bad spec with FEDLORA_ERR_CONFIG naming the entry', () => {
    const cases: Array<[string, RegExp]> = [
      ['coordinator.aggregate.computed', /entry "coordinator\.aggregate\.computed": expected <name>=<action>/],
      ['coordinator.aggregate.compted=pause(1)', /entry "coordinator\.aggregate\.compted=pause\(1\)": unknown failpoint "coordinator\.aggregate\.compted" \(known: coordinator\.aggregate\.computed, coordinator\.publish\.written, coordinator\.upload\.written, coordinator\.upload\.synced\)/],
      ['coordinator.publish.written=sleep(5)', /term "sleep\(5\)": unknown action/],
      ['coordinator.publish.written=pause(-1)', /term "pause\(-1\)": unknown action/],
      ['coordinator.publish.written=pause(5)->exit', /term "pause\(5\)" has no count/],
      ['coordinator.publish.written=0*exit', /a count must be >= 1/],
      ['coordinator.publish.written=exit(300)', /exit code must be 0\.\.255/],
      ['coordinator.publish.written=off;coordinator.publish.written=exit', /set twice/],
    ];
    for (const [spec, msg] of cases) {
      const e = refused(spec);
      expect(e.code, spec).toBe('FEDLORA_ERR_CONFIG');
      expect(e.message, spec).toMatch(new RegExp(`^${FAILPOINTS_ENV}: `));
      expect(e.message, spec).toMatch(msg);
    }
  });

  it('is inert without the variable, and follows the terms in order when set', async () => {
    const write = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    loadFailpoints({});
    await failpoint('coordinator.publish.written');
    expect(write).not.toHaveBeenCalled();

    resetFailpoints();
    loadFailpoints({ [FAILPOINTS_ENV]: 'coordinator.publish.written=1*off->1*pause(150)' });
    let t = Date.now();
    await failpoint('coordinator.publish.written'); // 1st hit: off
    expect(Date.now() - t).toBeLessThan(100);
    t = Date.now();
    await failpoint('coordinator.publish.written'); // 2nd hit: pause(150)
    expect(Date.now() - t).toBeGreaterThanOrEqual(140);
    await failpoint('coordinator.publish.written'); // terms used up: inert, no line
    await failpoint('coordinator.aggregate.computed'); // not configured
    expect(write.mock.calls.map((c) => String(c[0]))).toEqual([
      'fedlora failpoint coordinator.publish.written reached: off\n',
      'fedlora failpoint coordinator.publish.written reached: pause(150)\n',
    ]);
  });

  it('exit stops a real process at once with status 137, after the line', async () => {
    const code = `const m = await import(${JSON.stringify(join(ROOT, 'shared', 'failpoints.ts'))}); await m.failpoint('coordinator.aggregate.computed'); console.log('after');`;
    const r = await runProcess(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
      cwd: ROOT, env: { ...process.env, [FAILPOINTS_ENV]: 'coordinator.aggregate.computed=exit' },
    });
    expect(r.status).toBe(137);
    expect(r.stderr).toContain('fedlora failpoint coordinator.aggregate.computed reached: exit\n');
    expect(r.stdout).not.toContain('after');
    const bad = await runProcess(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
      cwd: ROOT, env: { ...process.env, [FAILPOINTS_ENV]: 'coordinator.aggregate.computed=explode' },
    });
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toContain('FEDLORA_FAILPOINTS: entry "coordinator.aggregate.computed=explode"');
  });
});
