// Probes from outside with real clients against a real coordinator on loopback:
// `openssl s_client` on the federation (mutual-TLS gRPC) port — no client certificate, TLS 1.2
// only, a certificate from a foreign CA, a revoked certificate: all refused, while the same
// probe with an enrolled site's certificate reaches the HTTP/2 layer (the control), and the
// listener keeps serving a real site afterwards; `curl` on the HTTP API without a token, with a
// wrong and an expired one, and with each role: the status and FEDLORA_ERR_* code of each.
// The clients run as child processes (async: the coordinator answers from this process).
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { revokeSite } from '../../coordinator/enrollment.ts';
import { addApiToken } from '../../coordinator/http/api-tokens.ts';
import { fromGrpcError } from '../../shared/errors.ts';
import { CURL, OPENSSL, requireTool } from '../runner/reference-tools.ts';
import { rmDir, tempDir } from '../coordinator/helpers.ts';
import { liveCoordinator, type LiveCoordinator } from './helpers.ts';
import { TEST_TIMEOUT_MS } from '../runner/limits.ts';

let live: LiveCoordinator;
let fedPort: string;
let work: string;

beforeAll(async () => {
  await requireTool(OPENSSL);
  await requireTool(CURL);
  live = await liveCoordinator(['hosp-a', 'hosp-b', 'hosp-c']);
  fedPort = live.coord.federationEndpoint.split(':').pop()!;
  work = tempDir('probes');
}, TEST_TIMEOUT_MS);
afterAll(async () => {
  await live?.cleanup();
  if (work) rmDir(work);
});

/** Run a command to its end; stdin gets `input` then EOF. The deadline only stops a hung client. */
function run(cmd: string, args: string[], input = '', deadlineMs = 60_000): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    p.on('error', reject);
    const t = setTimeout(() => p.kill('SIGKILL'), deadlineMs);
    p.on('close', (code) => {
      clearTimeout(t);
      resolve({ code, out });
    });
    p.stdin.end(input);
  });
}

/** openssl s_client to the federation port; it writes one line of non-HTTP/2 bytes and reads
 *  until the server closes (-ign_eof), so a refusal after the handshake is seen, not raced. */
const sClient = (...args: string[]) => run('openssl', ['s_client', '-connect', `127.0.0.1:${fedPort}`, '-servername', 'localhost', '-ign_eof', '-CAfile', join(live.siteDirs['hosp-a'], 'ca.crt'), ...args], 'PING\r\n\r\n');
const withCert = (dir: string) => ['-cert', join(dir, 'site.crt'), '-key', join(dir, 'site.key')];
/** What the server's HTTP/2 layer says to bytes that are not HTTP/2: proof the handshake was accepted. */
const REACHED_HTTP2 = /Missing ALPN Protocol|HTTP\/1\.\d 4\d\d|GOAWAY/;
/** The server dropped the connection after the client's certificate and before any HTTP/2. It
 *  closes the socket while the client's bytes may still be unread, so the kernel ends it either
 *  with FIN (openssl: "unexpected eof while reading", exit 1) or with RST (errno 104, ECONNRESET,
 *  which openssl 3 passes on as its exit status); which one is a race, both are the refusal. */
function expectDropped(r: { code: number | null; out: string }): void {
  expect(r.out).not.toMatch(REACHED_HTTP2);
  if (r.code === 104) expect(r.out).toMatch(/errno=104|Connection reset by peer/);
  else {
    expect(r.code, r.out).toBe(1);
    expect(r.out).toMatch(/unexpected eof while reading/);
  }
}

async function heartbeat(site: string): Promise<void> {
  const c = live.connect(site);
  await new Promise<void>((resolve, reject) => c.heartbeat({ agentVersion: 'probe', state: 'idle', currentTaskId: '', trainingTokensPerS: 0 }, new grpc.Metadata(), {}, (e) => (e ? reject(fromGrpcError(e)) : resolve())));
}

describe('openssl s_client against the federation port', () => {
  it('an enrolled site\'s certificate gets through the handshake (the control)', async () => {
    const r = await sClient(...withCert(live.siteDirs['hosp-a']));
    expect(r.out).toMatch(/New, TLSv1\.3, Cipher is TLS_/);
    expect(r.out).toMatch(REACHED_HTTP2);
    expect(r.out).not.toMatch(/alert/);
  });

  it('no client certificate: refused with the TLS 1.3 "certificate required" alert', async () => {
    const r = await sClient();
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/tlsv13 alert certificate required.*SSL alert number 116/);
    expect(r.out).not.toMatch(REACHED_HTTP2);
  });

  it('TLS 1.2 only: refused with a "protocol version" alert before any certificate is exchanged', async () => {
    const r = await sClient('-tls1_2', ...withCert(live.siteDirs['hosp-a']));
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/alert protocol version.*SSL alert number 70/);
    expect(r.out).toMatch(/New, \(NONE\), Cipher is \(NONE\)/);
  });

  it('a certificate from a foreign CA (made now, naming an enrolled site): the server drops the connection before any HTTP/2', async () => {
    const sh = (c: string, ...a: string[]) => run('openssl', [c, ...a]).then((r) => expect(r.code, `openssl ${c}: ${r.out}`).toBe(0));
    const f = (n: string) => join(work, n);
    await sh('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('foreign-ca.key'), '-out', f('foreign-ca.crt'), '-subj', '/CN=fedlora consortium CA/O=fedlora', '-days', '2');
    await sh('req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('site.key'), '-out', f('site.csr'), '-subj', '/CN=hosp-a', '-addext', 'subjectAltName=URI:spiffe://fedlora/site/hosp-a', '-addext', 'extendedKeyUsage=clientAuth');
    await sh('x509', '-req', '-in', f('site.csr'), '-CA', f('foreign-ca.crt'), '-CAkey', f('foreign-ca.key'), '-CAcreateserial', '-days', '2', '-copy_extensions', 'copy', '-out', f('site.crt'));
    expectDropped(await sClient('-cert', f('site.crt'), '-key', f('site.key')));
  });

  it('a revoked certificate: accepted before `site revoke`, dropped after it (the CRL is in the listener\'s TLS context)', async () => {
    const b = live.siteDirs['hosp-b'];
    expect((await sClient(...withCert(b))).out).toMatch(REACHED_HTTP2);
    revokeSite(live.coord.store.db, 'hosp-b', 'key lost');
    // the coordinator notices pki_crl on its next tick; poll the probe until it is refused
    let r = await sClient(...withCert(b));
    for (let i = 0; i < 50 && REACHED_HTTP2.test(r.out); i++) {
      await new Promise((res) => setTimeout(res, live.coord.config.rounds.tick_ms));
      r = await sClient(...withCert(b));
    }
    expectDropped(r);
    // a TLS 1.2 probe is still refused after the context was replaced
    expect((await sClient('-tls1_2', ...withCert(live.siteDirs['hosp-a']))).out).toMatch(/alert protocol version/);
  });

  it('the listener stays up: a real site still gets through, the control still passes', async () => {
    await heartbeat('hosp-a');
    await heartbeat('hosp-c');
    expect((await sClient(...withCert(live.siteDirs['hosp-c']))).out).toMatch(REACHED_HTTP2);
  });
});

describe('curl against the HTTP API', () => {
  /** status and error code of one curl request (and the body on 200) */
  async function curl(path: string, token?: string): Promise<{ status: number; code?: string; body: string }> {
    const r = await run('curl', ['-sS', '-o', '-', '-w', '\n%{http_code}', ...(token ? ['-H', `Authorization: Bearer ${token}`] : []), `${live.coord.httpUrl}${path}`]);
    expect(r.code, r.out).toBe(0);
    const nl = r.out.lastIndexOf('\n');
    const body = r.out.slice(0, nl);
    let code: string | undefined;
    try {
      code = (JSON.parse(body) as { error?: { code?: string } }).error?.code;
    } catch { /* not JSON */ }
    return { status: Number(r.out.slice(nl + 1)), code, body };
  }

  it('without a token, with a wrong, an expired one, and with each role: 401, 403 or 200 with the error code', async () => {
    const researcher = addApiToken(live.coord.store.db, { name: 'ana', role: 'researcher', ttlMs: 3_600_000 }).token;
    const observer = addApiToken(live.coord.store.db, { name: 'noc', role: 'observer', ttlMs: null }).token;
    const expired = addApiToken(live.coord.store.db, { name: 'old', role: 'admin', ttlMs: 1000, now: Date.now() - 60_000 }).token;
    const admin = live.adminToken;
    const table: [string, string | undefined, number, string | undefined][] = [
      ['/healthz', undefined, 200, undefined],
      ['/api/health', undefined, 401, 'FEDLORA_ERR_UNAUTHENTICATED'],
      ['/api/jobs', undefined, 401, 'FEDLORA_ERR_UNAUTHENTICATED'],
      ['/api/sites', 'flt_wrong', 401, 'FEDLORA_ERR_UNAUTHENTICATED'],
      ['/api/sites', expired, 401, 'FEDLORA_ERR_API_TOKEN_EXPIRED'],
      ['/metrics', undefined, 401, 'FEDLORA_ERR_UNAUTHENTICATED'],
      ['/api/health', observer, 200, undefined],
      ['/api/jobs', observer, 200, undefined],
      ['/api/sites', observer, 403, 'FEDLORA_ERR_ROLE'],
      ['/metrics', observer, 200, undefined],
      ['/api/sites', researcher, 200, undefined],
      ['/metrics', researcher, 403, 'FEDLORA_ERR_ROLE'],
      ['/api/jobs/none/metrics', researcher, 404, 'FEDLORA_ERR_NOT_FOUND'],
      ['/api/sites', admin, 200, undefined],
      ['/metrics', admin, 200, undefined],
    ];
    for (const [path, tok, status, code] of table) {
      const r = await curl(path, tok);
      expect([r.status, r.code], `${path} as ${tok === undefined ? 'nobody' : tok === admin ? 'admin' : tok === observer ? 'observer' : tok === researcher ? 'researcher' : tok}`).toEqual([status, code]);
    }
    expect((await curl('/metrics', observer)).body).toMatch(/^# HELP fedlora_/m);
    const sites = JSON.parse((await curl('/api/sites', researcher)).body) as { sites: { id: string; status: string; share_site_metrics: string }[] };
    expect(sites.sites.map((s) => [s.id, s.status])).toEqual([['hosp-a', 'active'], ['hosp-b', 'revoked'], ['hosp-c', 'active']]);
  });
});
