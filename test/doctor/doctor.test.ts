// `fedlora doctor` against real folders: a real coordinator (gRPC mutual TLS + enrollment +
// HTTP on 127.0.0.1, ports chosen at run time), a site enrolled with a real join token, a tiny
// model written at run time; then broken variants (expired / missing certificate, missing
// model file, wrong model hash, a skewed clock, a server certificate without the public name).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cpSync, existsSync, mkdtempSync, rmSync, writeFileSync, unlinkSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { initCoordinator, startCoordinator, type RunningCoordinator } from '../../coordinator/service.ts';
import { issueJoinToken } from '../../coordinator/enrollment.ts';
import { enrollSite } from '../../site-agent/enroll.ts';
import { computeModelManifest, initTinyModel } from '../../site-agent/engine/index.ts';
import { runSiteDoctor, runCoordinatorDoctor, checkClockSkew, checkDisk, formatDoctorReport, type DoctorReport } from '../../cli/doctor/index.ts';
import { freePort } from '../../shared/free-port.ts';

const REPO = join(import.meta.dirname, '..', '..');
let root: string;
let coordDir: string;
let siteDir: string;
let modelDir: string;
let coord: RunningCoordinator;
let modelSha: string;

const check = (r: DoctorReport, name: string) => {
  const c = r.checks.find((x) => x.name === name);
  if (!c) throw new Error(`no check ${name} in ${formatDoctorReport(r)}`);
  return c;
};
/** A copy of the enrolled site whose model folder lacks model.safetensors. */
function badModelSite(): string {
  const s = join(root, 'site-badmodel');
  if (existsSync(s)) return s;
  const broken = join(root, 'model-broken');
  cpSync(modelDir, broken, { recursive: true });
  unlinkSync(join(broken, 'model.safetensors'));
  cpSync(siteDir, s, { recursive: true });
  writeFileSync(join(s, 'site.yaml'), siteYaml(broken));
  return s;
}

const siteYaml = (model: string) => `name: Hospital A\nmodel:\n  path: ${model}\n  device: cpu\n`;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'fedlora-doctor-'));
  coordDir = join(root, 'coordinator');
  siteDir = join(root, 'site-a');
  modelDir = join(root, 'model');
  // fixed free ports (not 0) so that the coordinator doctor can find the running listeners from coordinator.yaml
  const [fedPort, enrPort, httpPort] = [await freePort(), await freePort(), await freePort()];
  const init = await initCoordinator({
    dataDir: coordDir,
    config: { federation: { host: '127.0.0.1', port: fedPort }, enrollment: { host: '127.0.0.1', port: enrPort }, http: { host: '127.0.0.1', port: httpPort } },
  });
  coord = await startCoordinator(coordDir, { logger: false });
  const { token } = issueJoinToken(coord.store.db, { siteId: 'hospital-a', ttlMs: 600_000, enrollEndpoint: coord.enrollmentEndpoint, caSha256: init.caSha256 });
  await enrollSite({ token, siteDir });
  initTinyModel({ arch: 'qwen2', out: modelDir, seed: 3, layers: 1, hidden: 16, heads: 2, kvHeads: 1 });
  modelSha = computeModelManifest(modelDir).sha256;
  writeFileSync(join(siteDir, 'site.yaml'), siteYaml(modelDir));
});

afterAll(async () => {
  await coord?.stop();
  rmSync(root, { recursive: true, force: true });
});

describe('fedlora doctor, site side', () => {
  it('a healthy enrolled site passes every check that can fail', async () => {
    const r = await runSiteDoctor({ siteDir, coordinatorUrl: coord.httpUrl, modelSha256: modelSha });
    expect(r.checks.filter((c) => c.status === 'FAIL'), formatDoctorReport(r)).toEqual([]);
    expect(r.ok).toBe(true);
    for (const n of ['config', 'certificate', 'reachability', 'clock', 'model', 'execution-providers', 'disk']) expect(check(r, n).status, n).toBe('OK');
    expect(check(r, 'certificate').detail).toContain('hospital-a');
    expect(check(r, 'reachability').detail).toContain(coord.federationEndpoint);
    expect(check(r, 'model').detail).toContain(modelSha);
    expect(check(r, 'execution-providers').detail).toContain('cpu');
    // no records ingested yet: a warning, not a failure
    expect(check(r, 'site-store').status).toBe('WARN');
  });

  it('an expired certificate is a FAIL that says when it expired and how to re-enroll; nothing is probed with it', async () => {
    const notAfter = Date.parse(new X509Certificate(readFileSync(join(siteDir, 'site.crt'))).validTo);
    const r = await runSiteDoctor({ siteDir, now: notAfter + 86_400_000, skipModelHash: true });
    const c = check(r, 'certificate');
    expect(c.status).toBe('FAIL');
    expect(c.detail).toMatch(/expired at \d{4}-/);
    expect(c.fix).toContain('fedlora site enroll');
    expect(check(r, 'reachability').status).toBe('SKIP');
    expect(r.ok).toBe(false);
  });

  it('a certificate close to expiry is a WARN', async () => {
    const notAfter = Date.parse(new X509Certificate(readFileSync(join(siteDir, 'site.crt'))).validTo);
    const r = await runSiteDoctor({ siteDir, now: notAfter - 3 * 86_400_000, skipModelHash: true });
    expect(check(r, 'certificate').status).toBe('WARN');
    expect(check(r, 'certificate').detail).toMatch(/expires in 3\.0 days/);
  });

  it('a missing certificate and a certificate for another key are FAILs naming the file', async () => {
    const noCert = join(root, 'site-nocert');
    cpSync(siteDir, noCert, { recursive: true });
    unlinkSync(join(noCert, 'site.crt'));
    const r = await runSiteDoctor({ siteDir: noCert, skipModelHash: true });
    expect(check(r, 'certificate').status).toBe('FAIL');
    expect(check(r, 'certificate').detail).toContain(join(noCert, 'site.crt'));
    expect(r.ok).toBe(false);

    // another enrolled site's certificate next to this site's key
    const other = join(root, 'site-b');
    const { token } = issueJoinToken(coord.store.db, { siteId: 'hospital-b', ttlMs: 600_000, enrollEndpoint: coord.enrollmentEndpoint, caSha256: JSON.parse(readFileSync(join(siteDir, 'enrollment.json'), 'utf8')).caSha256 });
    await enrollSite({ token, siteDir: other });
    const mixed = join(root, 'site-mixed');
    cpSync(siteDir, mixed, { recursive: true });
    cpSync(join(other, 'site.crt'), join(mixed, 'site.crt'));
    const r2 = await runSiteDoctor({ siteDir: mixed, skipModelHash: true });
    expect(check(r2, 'certificate').status).toBe('FAIL');
    expect(check(r2, 'certificate').detail).toMatch(/does not belong to the private key/);
  });

  it('a missing model file and a model that is not the job\'s are FAILs', async () => {
    const r = await runSiteDoctor({ siteDir: badModelSite() });
    expect(check(r, 'model').status).toBe('FAIL');
    expect(check(r, 'model').detail).toContain('FEDLORA_ERR_MODEL_FILES');
    expect(r.ok).toBe(false);

    const r2 = await runSiteDoctor({ siteDir, modelSha256: 'f'.repeat(64) });
    expect(check(r2, 'model').status).toBe('FAIL');
    expect(check(r2, 'model').detail).toContain(`expected ${'f'.repeat(64)}`);
    expect(check(r2, 'model').detail).toContain(modelSha);
  });

  it('a graph cache on another file system than the model is reported (the engine cannot hard-link the weights)', async () => {
    const same = await runSiteDoctor({ siteDir, skipModelHash: true, graphCacheDir: join(root, 'graphs') });
    expect(check(same, 'graph-cache').status).toBe('OK');
    // /dev/shm is a tmpfs on Linux: another file system than the temp dir holding the model
    const other = await runSiteDoctor({ siteDir, skipModelHash: true, graphCacheDir: '/dev/shm/fedlora-doctor-test-graphs' });
    expect(check(other, 'graph-cache').status).toBe('WARN');
    expect(check(other, 'graph-cache').fix).toContain('FEDLORA_GRAPH_CACHE');
  });

  it('an unreachable coordinator is a FAIL of the reachability check', async () => {
    const s = join(root, 'site-moved');
    cpSync(siteDir, s, { recursive: true });
    const rec = JSON.parse(readFileSync(join(s, 'enrollment.json'), 'utf8'));
    const port = await freePort(); // nothing listens there
    writeFileSync(join(s, 'enrollment.json'), JSON.stringify({ ...rec, federationEndpoint: `127.0.0.1:${port}` }));
    const r = await runSiteDoctor({ siteDir: s, skipModelHash: true, timeoutMs: 2000 });
    expect(check(r, 'reachability').status).toBe('FAIL');
    expect(check(r, 'reachability').detail).toContain('ECONNREFUSED');
  });

  it('a site.yaml with a wrong field is a FAIL naming the field', async () => {
    const s = join(root, 'site-badcfg');
    cpSync(siteDir, s, { recursive: true });
    writeFileSync(join(s, 'site.yaml'), `model:\n  path: ${modelDir}\n  device: tpu\n`);
    const r = await runSiteDoctor({ siteDir: s, skipModelHash: true });
    expect(check(r, 'config').status).toBe('FAIL');
    expect(check(r, 'config').detail).toContain('model.device');
  });
});

describe('fedlora doctor, probes', () => {
  let skewed: Server;
  afterAll(() => skewed?.close());
  it('a coordinator clock 10 minutes off is a FAIL; 30 s off a WARN', async () => {
    let offset = 0;
    skewed = createServer((_req, res) => {
      res.setHeader('Date', new Date(Date.now() + offset).toUTCString());
      res.end('{}');
    });
    await new Promise<void>((res) => skewed.listen(0, '127.0.0.1', res));
    const url = `http://127.0.0.1:${(skewed.address() as { port: number }).port}/`;
    offset = 600_000;
    const a = await checkClockSkew(url, { timeoutMs: 2000 });
    expect(a.status).toBe('FAIL');
    expect(a.detail).toMatch(/behind the coordinator by ~(599|60\d)\./);
    offset = -30_000;
    const b = await checkClockSkew(url, { timeoutMs: 2000 });
    expect(b.status).toBe('WARN');
    expect(b.detail).toContain('ahead of');
    offset = 0;
    expect((await checkClockSkew(url, { timeoutMs: 2000 })).status).toBe('OK');
  });

  it('too little free disk is a FAIL', () => {
    expect(checkDisk(root, { minFreeBytes: Number.MAX_SAFE_INTEGER, warnFreeBytes: Number.MAX_SAFE_INTEGER, what: 'x' }).status).toBe('FAIL');
    expect(checkDisk(root, { minFreeBytes: 1, warnFreeBytes: Number.MAX_SAFE_INTEGER, what: 'x' }).status).toBe('WARN');
    expect(checkDisk(root, { minFreeBytes: 1, warnFreeBytes: 2, what: 'x' }).status).toBe('OK');
  });
});

describe('fedlora doctor, coordinator side', () => {
  it('a running coordinator: certificates, store, service and enrollment listener OK', async () => {
    const r = await runCoordinatorDoctor({ dataDir: coordDir });
    expect(r.ok, formatDoctorReport(r)).toBe(true);
    for (const n of ['config', 'ca', 'server-certificate', 'manifest-signing', 'store', 'service', 'enrollment-listener', 'disk']) expect(check(r, n).status, n).toBe('OK');
  });

  it('a public endpoint missing from the server certificate is a FAIL; a stopped coordinator a WARN', async () => {
    const d = join(root, 'coordinator-2');
    await initCoordinator({ dataDir: d, config: { federation: { port: 0, public_endpoint: 'fed.consortium.example:7443' }, enrollment: { port: 0 }, http: { port: 1 } } });
    const r = await runCoordinatorDoctor({ dataDir: d, timeoutMs: 1000 });
    expect(check(r, 'server-names').status).toBe('FAIL');
    expect(check(r, 'server-names').fix).toContain('--san fed.consortium.example');
    expect(check(r, 'service').status).toBe('WARN');
    expect(r.ok).toBe(false);
  });
});

describe('fedlora doctor, the command', () => {
  // async: the coordinator runs in this process and must keep answering while the CLI probes it
  const cli = (...args: string[]) => new Promise<{ status: number | null; stdout: string; stderr: string }>((res) => {
    const p = spawn(process.execPath, [join(REPO, 'cli/bin.mjs'), 'doctor', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('close', (status) => res({ status, stdout, stderr }));
  });
  it('--json on a healthy site exits 0; on a site with a missing model file exits 1; text output names the fix', async () => {
    const ok = await cli('--site-dir', siteDir, '--coordinator-url', coord.httpUrl, '--model-sha256', modelSha, '--json');
    expect(ok.status, ok.stdout + ok.stderr).toBe(0);
    const rep = JSON.parse(ok.stdout) as DoctorReport;
    expect(rep.ok).toBe(true);
    expect(rep.side).toBe('site');

    const bad = await cli('--site-dir', badModelSite());
    expect(bad.status).toBe(1);
    expect(bad.stdout).toMatch(/\[FAIL\]\s+model/);
    expect(bad.stdout).toContain('fix:');
  });
  it('needs exactly one of --site-dir / --data-dir', async () => {
    const r = await cli();
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('FEDLORA_ERR_INVALID_ARGUMENT');
  });
});
