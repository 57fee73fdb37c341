// The systemd units: every Exec line runs the real CLI (with /opt/fedlora mapped to this
// checkout and /usr/bin/node to this node) with --help appended, so a wrong path, subcommand
// or option fails here; plus the hardening and state settings the units promise.
import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEPLOY, REPO, checkInvocation, fedlora } from './helpers.ts';

type Unit = Map<string, string[]>; // "Section.Key" → values (in order)

function parseUnit(text: string): Unit {
  const u: Unit = new Map();
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const s = /^\[(\w+)\]$/.exec(line);
    if (s) {
      section = s[1];
      continue;
    }
    const m = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (!m) throw new Error(`not a unit line: ${line}`);
    const k = `${section}.${m[1]}`;
    u.set(k, [...(u.get(k) ?? []), m[2]]);
  }
  return u;
}
const one = (u: Unit, k: string) => {
  const v = u.get(k);
  if (!v) throw new Error(`missing ${k}`);
  return v[v.length - 1];
};

const UNITS = {
  'fedlora-coordinator.service': { dirOption: '--data-dir', dir: '/var/lib/fedlora/coordinator', sub: ['coordinator', 'start'] },
  'fedlora-site.service': { dirOption: '--site-dir', dir: '/var/lib/fedlora/site', sub: ['site', 'start'] },
  'fedlora-assistant.service': { dirOption: '--site-dir', dir: '/var/lib/fedlora/site', sub: ['site', 'serve'] },
};

describe.each(Object.entries(UNITS))('deploy/systemd/%s', (file, want) => {
  const u = parseUnit(readFileSync(join(DEPLOY, 'systemd', file), 'utf8'));

  it('ExecStart runs `node /opt/fedlora/cli/bin.mjs` with an existing subcommand and options', async () => {
    const exec = one(u, 'Service.ExecStart').split(/\s+/);
    expect(exec[0]).toBe('/usr/bin/node');
    expect(exec[1]).toBe('/opt/fedlora/cli/bin.mjs');
    expect(existsSync(exec[1].replace('/opt/fedlora', REPO))).toBe(true);
    const args = exec.slice(2);
    expect(args.slice(0, 2)).toEqual(want.sub);
    expect(args[args.indexOf(want.dirOption) + 1]).toBe(want.dir);
    expect(await checkInvocation(args, `${file} ExecStart`)).toBeNull();
    // and for real: the process starts, the command exists, it prints its usage
    const r = await fedlora([...args, '--help']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain(`Usage: fedlora ${want.sub.join(' ')} [options]`);
    expect(r.stdout).toContain(want.dirOption);
  });

  it('every ExecStartPre/ExecStartPost runs an existing command too', async () => {
    for (const key of ['Service.ExecStartPre', 'Service.ExecStartPost']) {
      for (const line of u.get(key) ?? []) {
        const exec = line.replace(/^[-@:+!]+/, '').split(/\s+/);
        expect(exec[0]).toBe('/usr/bin/node');
        expect(existsSync(exec[1].replace('/opt/fedlora', REPO))).toBe(true);
        expect(await checkInvocation(exec.slice(2), `${file} ${key}`)).toBeNull();
      }
    }
  });

  it('keys sit in their sections (systemd ignores [Unit] keys placed in [Service], e.g. StartLimitIntervalSec)', () => {
    const unitOnly = ['Description', 'Documentation', 'After', 'Wants', 'Requires', 'StartLimitIntervalSec', 'StartLimitBurst'];
    for (const k of u.keys()) {
      const [section, key] = k.split('.');
      if (unitOnly.includes(key)) expect(section, key).toBe('Unit');
      else if (key !== 'WantedBy') expect(section, key).toBe('Service');
    }
    expect(Number(one(u, 'Unit.StartLimitBurst'))).toBeGreaterThan(0);
  });

  it('runs as the fedlora user with the hardening settings, restarts on failure', () => {
    expect(one(u, 'Service.User')).toBe('fedlora');
    expect(one(u, 'Service.Group')).toBe('fedlora');
    expect(one(u, 'Service.Restart')).toBe('on-failure');
    for (const [k, v] of Object.entries({
      NoNewPrivileges: 'true', ProtectSystem: 'strict', ProtectHome: 'true', PrivateTmp: 'true', CapabilityBoundingSet: '',
      SystemCallFilter: '@system-service', MemoryDenyWriteExecute: 'false', // V8's JIT needs W+X pages
    })) expect(one(u, `Service.${k}`), k).toBe(v);
    expect(one(u, 'Service.RestrictAddressFamilies').split(/\s+/).sort()).toEqual(['AF_INET', 'AF_INET6', 'AF_UNIX']);
    expect(Number(one(u, 'Service.LimitNOFILE'))).toBeGreaterThanOrEqual(65536);
    expect(one(u, 'Install.WantedBy')).toBe('multi-user.target');
  });

  it('with ProtectSystem=strict, the data dir, working dir and caches are writable paths', () => {
    const rw = one(u, 'Service.ReadWritePaths').split(/\s+/);
    const under = (p: string) => rw.some((w) => p === w || p.startsWith(w + '/'));
    expect(under(want.dir)).toBe(true);
    expect(under(one(u, 'Service.WorkingDirectory'))).toBe(true);
    for (const env of u.get('Service.Environment') ?? []) {
      const m = /^(FEDLORA_\w+_CACHE)=(.+)$/.exec(env);
      if (m) expect(under(m[2]), `${m[1]}=${m[2]} must be writable`).toBe(true);
    }
  });
});

it('the site unit puts the graph cache on the same tree as the models (hard links need one file system)', () => {
  const u = parseUnit(readFileSync(join(DEPLOY, 'systemd', 'fedlora-site.service'), 'utf8'));
  const env = Object.fromEntries((u.get('Service.Environment') ?? []).map((e) => e.split('=') as [string, string]));
  expect(env.FEDLORA_GRAPH_CACHE.startsWith('/var/lib/fedlora/')).toBe(true);
  expect(one(u, 'Service.ReadWritePaths').split(/\s+/)).toContain('/var/lib/fedlora/models');
});

it('the invocation check itself rejects a wrong subcommand, a wrong option, a missing required option and a surplus argument', async () => {
  expect(await checkInvocation(['site', 'startx', '--site-dir', '/x'], 't')).toMatch(/not a command/);
  expect(await checkInvocation(['coordinator', 'start', '--data-dirr', '/x'], 't')).toMatch(/no option --data-dirr/);
  expect(await checkInvocation(['coordinator', 'start'], 't')).toMatch(/needs --data-dir/);
  expect(await checkInvocation(['site', 'revoke', 'hospital-a', '--data-dir', '/x'], 't')).toBeNull();
  expect(await checkInvocation(['coordinator', 'start', 'extra', '--data-dir', '/x'], 't')).toMatch(/at most 0 argument/);
  expect(await checkInvocation(['coordinator', 'init', '--data-dir', '/x', '--san', 'a', 'b'], 't')).toBeNull();
});
