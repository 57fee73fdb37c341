// Dockerfiles and the three-hospital compose trial, checked without a Docker engine: every
// COPY source exists, the final USER is not root, the CMD/HEALTHCHECK/entrypoint commands are
// real fedlora commands; compose services, volumes, networks, build contexts, hardening; the
// shell scripts parse and every fedlora command they run exists with those options; the
// site.yaml and job spec they write validate against the real schemas.
import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import YAML from 'yaml';
import { DEPLOY, REPO, checkInvocation } from './helpers.ts';
import { parseSiteConfig } from '../../site-agent/config.ts';
import { parseJobSpec } from '../../coordinator/jobs/spec.ts';

interface Instr { op: string; args: string; line: number }
/** Dockerfile instructions with line continuations joined and comments dropped. */
function parseDockerfile(text: string): Instr[] {
  const out: Instr[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (/^\s*(#|$)/.test(lines[i])) continue;
    const start = i;
    let l = lines[i];
    while (l.endsWith('\\') && i + 1 < lines.length) l = l.slice(0, -1) + ' ' + lines[++i].replace(/^\s*#.*$/, '');
    const m = /^\s*([A-Z]+)\s+(.*)$/.exec(l);
    if (!m) throw new Error(`line ${start + 1}: not an instruction: ${l}`);
    out.push({ op: m[1], args: m[2].trim(), line: start + 1 });
  }
  return out;
}
const execForm = (args: string): string[] | null => (args.startsWith('[') ? (JSON.parse(args) as string[]) : null);

/** fedlora invocations in a shell script: `$FEDLORA sub ... ` and `node /opt/fedlora/cli/bin.mjs sub ...` lines. */
function fedloraCallsIn(script: string): { args: string[]; line: number }[] {
  const calls: { args: string[]; line: number }[] = [];
  // join continuation lines, keeping the first line's number
  const lines: { text: string; no: number }[] = [];
  script.split('\n').forEach((l, i) => {
    const prev = lines[lines.length - 1];
    if (prev && prev.text.endsWith('\\')) prev.text = prev.text.slice(0, -1) + ' ' + l.trim();
    else lines.push({ text: l, no: i + 1 });
  });
  lines.forEach(({ text: l, no }) => {
    if (/^\s*#/.test(l)) return;
    const m = /(?:\$FEDLORA|\$\{FEDLORA\}|node \/opt\/fedlora\/cli\/bin\.mjs|coordinator-entrypoint\.sh fedlora)\s+([^|;&)`]*)/.exec(l);
    if (!m) return;
    const words = m[1].replace(/\\$/, '').trim().split(/\s+/).filter(Boolean).map((w) => w.replace(/^"|"$/g, ''));
    calls.push({ args: words, line: no });
  });
  return calls;
}

const DOCKERFILES = ['Dockerfile.coordinator', 'Dockerfile.site'];

describe.each(DOCKERFILES)('deploy/docker/%s', (name) => {
  const ins = parseDockerfile(readFileSync(join(DEPLOY, 'docker', name), 'utf8'));
  const stages = ins.filter((x) => x.op === 'FROM');
  const finalStart = ins.indexOf(stages[stages.length - 1]);
  const final = ins.slice(finalStart);

  it('is node:20-bookworm-slim based, installs production deps with npm ci --omit=dev and package.json\'s allowScripts', () => {
    for (const s of stages) expect(s.args.split(/\s+/)[0]).toBe('node:20-bookworm-slim');
    const ci = ins.findIndex((x) => x.op === 'RUN' && /npm ci --omit=dev/.test(x.args));
    expect(ci).toBeGreaterThan(-1);
    // package.json's allowScripts (onnxruntime-node: false, no CUDA download) must be in place before npm ci
    const pkg = ins.findIndex((x) => x.op === 'COPY' && x.args.split(/\s+/).includes('package.json'));
    expect(pkg).toBeGreaterThan(-1);
    expect(pkg).toBeLessThan(ci);
    expect(JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')).allowScripts['onnxruntime-node']).toBe(false);
    // better-sqlite3's native build tools in the stage that runs npm ci
    const aptBeforeCi = ins.slice(0, ci).filter((x) => x.op === 'RUN' && /apt-get install/.test(x.args)).map((x) => x.args).join(' ');
    for (const p of ['python3', 'make', 'g++']) expect(aptBeforeCi).toContain(p);
  });

  it('every COPY source exists in the repository (build context = repo root)', () => {
    const copies = ins.filter((x) => x.op === 'COPY' && !/--from=/.test(x.args));
    expect(copies.length).toBeGreaterThan(3);
    for (const c of copies) {
      const parts = execForm(c.args) ?? c.args.split(/\s+/).filter((w) => !w.startsWith('--'));
      for (const src of parts.slice(0, -1)) expect(existsSync(join(REPO, src)), `${name}:${c.line}: COPY ${src}`).toBe(true);
    }
    // what the CLI imports at run time is all copied
    const copied = copies.flatMap((c) => c.args.split(/\s+/).slice(0, -1));
    for (const dir of ['cli', 'shared', 'certs', 'proto', 'coordinator', 'site-agent', 'package.json']) expect(copied, dir).toContain(dir);
    // and the build context's ignore file does not exclude any COPY source
    const ignore = readFileSync(join(DEPLOY, 'docker', `${name}.dockerignore`), 'utf8').split('\n').filter((l) => l && !l.startsWith('#'));
    for (const src of copied) expect(ignore.filter((p) => p === src || p === `${src}/`), src).toEqual([]);
  });

  it('runs as a non-root user, with a /data volume and a HEALTHCHECK', () => {
    const users = final.filter((x) => x.op === 'USER');
    expect(users.length).toBeGreaterThan(0);
    const user = users[users.length - 1].args.split(':')[0];
    expect(['root', '0']).not.toContain(user);
    expect(final.some((x) => x.op === 'VOLUME' && x.args.includes('/data'))).toBe(true);
    expect(final.some((x) => x.op === 'HEALTHCHECK' && /CMD/.test(x.args))).toBe(true);
    // the engine's graph/hash caches point into the volume (read-only root file system)
    const env = final.filter((x) => x.op === 'ENV').map((x) => x.args).join(' ');
    for (const m of env.matchAll(/(FEDLORA_\w+_CACHE)=(\S+)/g)) expect(m[2].startsWith('/data/'), m[1]).toBe(true);
  });

  it('ENTRYPOINT/CMD/HEALTHCHECK run fedlora commands that exist', async () => {
    const ep = execForm(final.filter((x) => x.op === 'ENTRYPOINT').pop()!.args)!;
    const cmd = execForm(final.filter((x) => x.op === 'CMD').pop()!.args)!;
    if (ep[0] === 'node') {
      expect(ep[1]).toBe('/opt/fedlora/cli/bin.mjs');
      expect(await checkInvocation(cmd, `${name} CMD`)).toBeNull();
    } else {
      // a shell entrypoint script from the repo: its fedlora calls are checked
      const script = ep[ep.length - 1].replace('/opt/fedlora', REPO);
      expect(existsSync(script), script).toBe(true);
      const calls = fedloraCallsIn(readFileSync(script, 'utf8'));
      expect(calls.length).toBeGreaterThan(0);
      for (const c of calls) if (c.args[0] !== '$@') expect(await checkInvocation(c.args, `${script}:${c.line}`)).toBeNull();
      expect(spawnSync('sh', ['-n', script]).status).toBe(0);
    }
    const hc = final.find((x) => x.op === 'HEALTHCHECK')!.args;
    const hcCmd = JSON.parse(hc.slice(hc.indexOf('CMD') + 3).trim()) as string[];
    if (hcCmd[1] === '/opt/fedlora/cli/bin.mjs') expect(await checkInvocation(hcCmd.slice(2), `${name} HEALTHCHECK`)).toBeNull();
    else expect(hcCmd.join(' ')).toContain('/healthz');
  });
});

describe('deploy/compose/docker-compose.yml', () => {
  const dir = join(DEPLOY, 'compose');
  const doc = YAML.parse(readFileSync(join(dir, 'docker-compose.yml'), 'utf8'), { merge: true });
  const services = doc.services as Record<string, any>;

  it('has a coordinator, three hospitals and their one-shot enroll jobs', () => {
    for (const s of ['coordinator', 'hospital-a', 'hospital-b', 'hospital-c', 'enroll-hospital-a', 'enroll-hospital-b', 'enroll-hospital-c']) expect(Object.keys(services)).toContain(s);
  });

  it('every service: read-only root, non-root user, /tmp tmpfs, no capabilities', () => {
    for (const [n, s] of Object.entries(services)) {
      expect(s.read_only, n).toBe(true);
      expect(typeof s.user, n).toBe('string');
      expect(['0', 'root'], n).not.toContain(String(s.user).split(':')[0]);
      expect((s.tmpfs as string[]).some((t) => t.startsWith('/tmp')), n).toBe(true);
      expect(s.cap_drop, n).toEqual(['ALL']);
    }
  });

  it('every named volume and network used is declared; bind mounts exist; depends_on targets exist', () => {
    for (const [n, s] of Object.entries(services)) {
      for (const v of (s.volumes ?? []) as string[]) {
        const src = v.split(':')[0];
        if (src.startsWith('.') || src.startsWith('/')) expect(existsSync(resolve(dir, src)), `${n}: ${src}`).toBe(true);
        else expect(Object.keys(doc.volumes ?? {}), `${n}: volume ${src}`).toContain(src);
      }
      for (const net of (s.networks ?? []) as string[]) expect(Object.keys(doc.networks ?? {}), `${n}: network ${net}`).toContain(net);
      for (const [dep, cond] of Object.entries((s.depends_on ?? {}) as Record<string, { condition: string }>)) {
        expect(Object.keys(services), `${n} depends on ${dep}`).toContain(dep);
        expect(['service_started', 'service_healthy', 'service_completed_successfully']).toContain(cond.condition);
        // waiting for health needs a HEALTHCHECK in the image that service is built from
        if (cond.condition === 'service_healthy') {
          const df = readFileSync(resolve(dir, services[dep].build.context, services[dep].build.dockerfile), 'utf8');
          expect(df).toMatch(/^HEALTHCHECK /m);
        }
      }
    }
  });

  it('build contexts and Dockerfiles exist; every image used is built by some service', () => {
    const built = new Map<string, string>();
    for (const [n, s] of Object.entries(services)) {
      if (!s.build) continue;
      const ctx = resolve(dir, s.build.context);
      expect(ctx, n).toBe(REPO);
      expect(statSync(join(ctx, s.build.dockerfile)).isFile(), n).toBe(true);
      built.set(s.image, s.build.dockerfile);
    }
    for (const [n, s] of Object.entries(services)) expect([...built.keys()], `${n} uses ${s.image}`).toContain(s.image);
    expect(built.get('fedlora-coordinator:trial')).toBe('deploy/docker/Dockerfile.coordinator');
    expect(built.get('fedlora-site:trial')).toBe('deploy/docker/Dockerfile.site');
  });

  it('each hospital has its own volume at /data, and its enroll job prepares that same volume', () => {
    for (const h of ['hospital-a', 'hospital-b', 'hospital-c']) {
      const vol = `${h}-data`;
      expect(services[h].volumes).toContain(`${vol}:/data`);
      expect(services[`enroll-${h}`].volumes).toContain(`${vol}:/data`);
      expect(services[h].depends_on[`enroll-${h}`].condition).toBe('service_completed_successfully');
      expect(services[h].command).toEqual(['site', 'start', '--site-dir', '/data/site']);
    }
    // the hospitals' data volumes are distinct
    expect(new Set(['hospital-a', 'hospital-b', 'hospital-c'].map((h) => services[h].volumes[0])).size).toBe(3);
  });

  it('the enrollment endpoint and public endpoint the scripts use are names in the server certificate', () => {
    const sans = String(services.coordinator.environment.FEDLORA_SANS).split(/\s+/);
    expect(sans).toContain(String(services.coordinator.environment.FEDLORA_PUBLIC_ENDPOINT).split(':')[0]);
    const init = readFileSync(join(dir, 'trial-init.sh'), 'utf8');
    const ep = /--enroll-endpoint (\S+)/.exec(init)![1];
    expect(sans).toContain(ep.split(':')[0]);
    expect(Object.keys(services)).toContain(ep.split(':')[0]); // resolvable on the compose network
  });

  it('trial scripts parse, and every fedlora command in them exists with those options', async () => {
    for (const f of ['trial.sh', 'trial-init.sh']) {
      expect(spawnSync('sh', ['-n', join(dir, f)]).status, f).toBe(0);
      const calls = fedloraCallsIn(readFileSync(join(dir, f), 'utf8'));
      expect(calls.length, f).toBeGreaterThan(0);
      for (const c of calls) expect(await checkInvocation(c.args, `${f}:${c.line}`)).toBeNull();
    }
  });

  it('the site.yaml and the job spec trial-init.sh writes validate against the real schemas', () => {
    const init = readFileSync(join(dir, 'trial-init.sh'), 'utf8');
    const heredocs = [...init.matchAll(/<<YAML\n([\s\S]*?)\nYAML\n/g)].map((m) => m[1]);
    expect(heredocs.length).toBe(2);
    const subst = (t: string) => t.replace(/\$SITE/g, 'hospital-a').replace(/\$SHA/g, 'ab'.repeat(32));
    const site = parseSiteConfig(YAML.parse(subst(heredocs[0])), 'trial site.yaml');
    expect(site.model.path).toBe('/data/model');
    const job = parseJobSpec(YAML.parse(subst(heredocs[1])), 'trial-job.yaml');
    expect(job.min_sites).toBeLessThanOrEqual(3);
    expect(job.base_model.config_path).toBeTruthy();
  });
});
