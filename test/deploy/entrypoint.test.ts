// The coordinator image's entrypoint, run for real on this machine (FEDLORA_HOME = this
// checkout): first start = `coordinator init` with the SANs and public endpoint from the
// environment, HTTP on all interfaces, the ConfigMap-style overrides merged (admin_tokens in
// them ignored); the coordinator then serves, `fedlora doctor --data-dir` finds it healthy,
// SIGTERM stops it cleanly, and a second start (no init) works with the same data dir.
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import YAML from 'yaml';
import { DEPLOY, REPO } from './helpers.ts';
import { runCoordinatorDoctor, formatDoctorReport } from '../../cli/doctor/index.ts';
import { freePort } from '../../shared/free-port.ts';

const root = mkdtempSync(join(tmpdir(), 'fedlora-entrypoint-'));
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  rmSync(root, { recursive: true, force: true });
});


/** Start the entrypoint; resolves once the coordinator printed its endpoints. */
function startEntrypoint(env: Record<string, string>): Promise<{ child: ChildProcess; out: () => string }> {
  const child = spawn('sh', [join(DEPLOY, 'docker', 'coordinator-entrypoint.sh'), 'start'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`entrypoint did not start in 60 s:\n${out}`)), 60_000);
    const on = (d: Buffer) => {
      out += d;
      if (out.includes('http: http://')) {
        clearTimeout(t);
        resolve({ child, out: () => out });
      }
    };
    child.stdout!.on('data', on);
    child.stderr!.on('data', on);
    child.on('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`entrypoint exited ${code}:\n${out}`));
    });
  });
}
/** SIGTERM; resolves with "exit CODE" or "signal SIG" (the coordinator handles SIGTERM: exit 0). */
const stop = (child: ChildProcess) => new Promise<string>((r) => {
  child.removeAllListeners('exit');
  child.on('exit', (code, signal) => r(code === null ? `signal ${signal}` : `exit ${code}`));
  child.kill('SIGTERM');
});

describe('deploy/docker/coordinator-entrypoint.sh', () => {
  it('first start initialises with the SANs, binds HTTP on all interfaces, merges overrides; restarts without re-init', async () => {
    const dataDir = join(root, 'data', 'coordinator');
    const [fed, enr, http] = [await freePort(), await freePort(), await freePort()];
    const overrides = join(root, 'overrides.yaml');
    writeFileSync(overrides, YAML.stringify({
      federation: { port: fed }, enrollment: { port: enr }, http: { port: http }, heartbeat: { timeout_ms: 45_000 }, log_level: 'warn',
      admin_tokens: [{ name: 'intruder', sha256: 'a'.repeat(64) }],
    }));
    const env = { FEDLORA_HOME: REPO, FEDLORA_DATA_DIR: dataDir, FEDLORA_SANS: 'coordinator localhost', FEDLORA_CONFIG_OVERRIDES: overrides };
    const { child, out } = await startEntrypoint(env);

    const cfgFile = join(dataDir, 'coordinator.yaml');
    const cfg = YAML.parse(readFileSync(cfgFile, 'utf8'));
    expect(cfg.http.host).toBe('0.0.0.0');
    expect(cfg.http.port).toBe(http);
    expect(cfg.federation.public_endpoint).toBe('coordinator:7443');
    expect(cfg.heartbeat.timeout_ms).toBe(45_000);
    expect(cfg.admin_tokens.map((t: { name: string }) => t.name)).toEqual(['init']); // overrides never add tokens
    expect(statSync(cfgFile).mode & 0o777).toBe(0o600);

    const health = await fetch(`http://127.0.0.1:${http}/healthz`); // the probes' route: no token
    expect(health.status).toBe(200);
    const r = await runCoordinatorDoctor({ dataDir });
    expect(r.ok, formatDoctorReport(r)).toBe(true);
    expect(r.checks.find((c) => c.name === 'server-names')!.status).toBe('OK'); // "coordinator" is in the certificate
    expect(r.checks.find((c) => c.name === 'enrollment-listener')!.status).toBe('OK');
    expect(await stop(child), out()).toBe('exit 0');

    const tokenBefore = readFileSync(join(dataDir, 'admin.token'), 'utf8');
    const second = await startEntrypoint(env);
    expect(second.out()).not.toContain('admin token'); // no second init
    expect(readFileSync(join(dataDir, 'admin.token'), 'utf8')).toBe(tokenBefore);
    // `coordinator start` prints its endpoints just before it installs its SIGTERM handler: a
    // signal sent within that instant kills it with the default action. Let it settle first.
    await new Promise((r) => setTimeout(r, 500));
    expect(await stop(second.child), second.out()).toBe('exit 0');
  });

  it('`fedlora ARGS` runs a CLI command; anything else is a usage error', async () => {
    const run = (args: string[]) => new Promise<{ code: number | null; out: string }>((res) => {
      const c = spawn('sh', [join(DEPLOY, 'docker', 'coordinator-entrypoint.sh'), ...args], { env: { ...process.env, FEDLORA_HOME: REPO } });
      let out = '';
      c.stdout.on('data', (d) => (out += d));
      c.stderr.on('data', (d) => (out += d));
      c.on('exit', (code) => res({ code, out }));
    });
    const ok = await run(['fedlora', 'site', 'invite', '--help']);
    expect(ok.code).toBe(0);
    expect(ok.out).toContain('Usage: fedlora site invite');
    const bad = await run(['bogus']);
    expect(bad.code).toBe(2);
    expect(bad.out).toContain('usage:');
  });
});
