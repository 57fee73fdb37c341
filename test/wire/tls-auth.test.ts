// Who may talk to the Federation listener: only TLS 1.3 clients holding a current certificate
// from the consortium CA, for an enrolled, active, unrevoked site.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createSecureContext } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { diagnoseSiteCredentials, enrollSite } from '../../site-agent/enroll.ts';
import { issueJoinToken, revokeSite, setSiteStatus } from '../../coordinator/enrollment.ts';
import { authenticateCall, needsRenewal } from '../../coordinator/auth.ts';
import { initCa, issueCertificate, type LoadedCa } from '../../certs/ca.ts';
import { exportPrivateKeyPem, generateKeyPair, SPIFFE_PREFIX } from '../../certs/x509.ts';
import { createFederationClient, unary, type FederationClient } from '../../shared/proto.ts';
import { createClientCredentials, createSiteChannelCredentials, sitePaths } from '../../shared/tls.ts';
import { startCoordinator, tempDir, type TestCoordinator } from './helpers.ts';

let coord: TestCoordinator;
const dirs: string[] = [];

beforeAll(async () => {
  coord = await startCoordinator();
});
afterAll(async () => {
  await coord.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function enrolled(site: string): Promise<string> {
  const dir = tempDir('site');
  dirs.push(dir);
  const { token } = issueJoinToken(coord.db, { siteId: site, ttlMs: 60_000, enrollEndpoint: coord.enrollEndpoint, caSha256: coord.ca.sha256 });
  await enrollSite({ token, siteDir: dir });
  return dir;
}

function heartbeat(client: FederationClient): Promise<unknown> {
  return unary(client.heartbeat.bind(client), { state: 'idle' }, { deadline: Date.now() + 10_000 });
}

async function refused(client: FederationClient): Promise<grpc.ServiceError> {
  const err = await heartbeat(client).then(() => null, (e) => e as grpc.ServiceError);
  client.close();
  expect(err, "the call should have been refused").not.toBeNull();
  return err!;
}

/** A site certificate made outside enrollment (another CA, or an already-expired window). */
async function siteCert(ca: LoadedCa, site: string, window?: { notBefore: Date; notAfter: Date }) {
  const keys = await generateKeyPair('ecdsa-p256');
  const { pem } = await issueCertificate(ca, {
    subject: `CN=${site}`, publicKey: keys.publicKey, validityDays: 1, usage: 'client',
    sans: [{ type: 'url', value: SPIFFE_PREFIX + site }], ...window,
  });
  return { cert: pem, key: await exportPrivateKeyPem(keys.privateKey) };
}

describe('federation listener: mutual TLS 1.3 + per-call authorisation', () => {
  it('accepts an enrolled site and reports who it is from the certificate', async () => {
    const dir = await enrolled('site-ok');
    const c = createFederationClient(coord.federationEndpoint, createSiteChannelCredentials(dir));
    await heartbeat(c);
    c.close();
    const who = coord.seen.at(-1)!;
    expect(who.siteId).toBe('site-ok');
    expect(who.notAfter).toBeGreaterThan(Date.now());
    expect(needsRenewal(who)).toBe(false);
    expect(needsRenewal(who, 0.3, who.notBefore + 0.9 * (who.notAfter - who.notBefore))).toBe(true);
  });

  it('refuses a client without a certificate during the handshake', async () => {
    const c = createFederationClient(coord.federationEndpoint, createClientCredentials({ ca: coord.ca.certPem }));
    const err = await refused(c);
    expect(err.code).toBe(grpc.status.UNAVAILABLE);
    expect(err.details).toMatch(/alert certificate required/);
    expect(coord.seen.some((s) => s.siteId === '')).toBe(false);
  });

  it('refuses a certificate from another CA', async () => {
    const otherDir = tempDir('other-ca');
    dirs.push(otherDir);
    const other = await initCa({ dir: otherDir, validityDays: 10 });
    const { cert, key } = await siteCert(other, 'site-ok');
    const before = coord.seen.length;
    const c = createFederationClient(coord.federationEndpoint, createClientCredentials({ ca: coord.ca.certPem, cert, key }));
    const err = await refused(c);
    expect(err.code).toBe(grpc.status.UNAVAILABLE);
    // Node's TLS server drops the connection without an alert, so the client only sees
    // that no connection was established.
    expect(err.details).toMatch(/No connection established/);
    expect(coord.seen.length).toBe(before); // no handler ran
  });

  it('refuses an expired certificate from the right CA', async () => {
    const now = Date.now();
    const { cert, key } = await siteCert(coord.ca, 'site-ok', { notBefore: new Date(now - 10 * 86_400_000), notAfter: new Date(now - 86_400_000) });
    const before = coord.seen.length;
    const c = createFederationClient(coord.federationEndpoint, createClientCredentials({ ca: coord.ca.certPem, cert, key }));
    const err = await refused(c);
    expect(err.code).toBe(grpc.status.UNAVAILABLE);
    expect(err.details).toMatch(/No connection established/);
    expect(coord.seen.length).toBe(before);
  });

  it('the site can tell locally why the handshake was refused', async () => {
    const dir = await enrolled('site-diag');
    expect((await diagnoseSiteCredentials(dir)).siteId).toBe('site-diag');
    await expect(diagnoseSiteCredentials(dir, Date.now() + 400 * 86_400_000)).rejects.toMatchObject({ code: 'FEDLORA_ERR_CERT_EXPIRED' });
    const otherDir = tempDir('other-ca2');
    dirs.push(otherDir);
    const other = await initCa({ dir: otherDir, validityDays: 10 });
    writeFileSync(sitePaths(dir).ca, other.certPem);
    await expect(diagnoseSiteCredentials(dir)).rejects.toMatchObject({ code: 'FEDLORA_ERR_CERT_INVALID' });
  });

  it('authenticateCall itself refuses expired / missing certificates (defence in depth)', async () => {
    const now = Date.now();
    const { cert } = await siteCert(coord.ca, 'site-ok', { notBefore: new Date(now - 10 * 86_400_000), notAfter: new Date(now - 86_400_000) });
    const raw = Buffer.from(cert.split('\n').filter((l) => !l.startsWith('-----')).join(''), 'base64');
    const deps = { siteStatus: () => 'active' as const, isRevoked: () => false };
    expect(() => authenticateCall({ getAuthContext: () => ({ sslPeerCertificate: { raw } }) }, deps)).toThrow(/FEDLORA_ERR_CERT_EXPIRED|expired at/);
    expect(() => authenticateCall({ getAuthContext: () => ({}) }, deps)).toThrow(/no client certificate/);
    try {
      authenticateCall({ getAuthContext: () => ({ sslPeerCertificate: { raw } }) }, deps);
    } catch (e) {
      expect((e as { code: string }).code).toBe('FEDLORA_ERR_CERT_EXPIRED');
    }
  });

  it('refuses a TLS 1.2-only client', async () => {
    const dir = await enrolled('site-tls12');
    const p = sitePaths(dir);
    const ctx = createSecureContext({ ca: readFileSync(p.ca), key: readFileSync(p.key), cert: readFileSync(p.cert), maxVersion: 'TLSv1.2' });
    const c = createFederationClient(coord.federationEndpoint, grpc.ChannelCredentials.createFromSecureContext(ctx));
    const err = await refused(c);
    expect(err.code).toBe(grpc.status.UNAVAILABLE);
    expect(err.details).toMatch(/alert protocol version/);
  });

  it('the enrollment listener speaks TLS 1.3 only and asks for no client certificate', async () => {
    const [host, port] = coord.enrollEndpoint.split(':');
    const tryTls = (maxVersion: 'TLSv1.2' | 'TLSv1.3') => new Promise<string>((resolve) => {
      const s = connect({ host, port: Number(port), ca: coord.ca.certPem, maxVersion, servername: 'localhost' });
      s.on('secureConnect', () => {
        resolve(`ok ${s.getProtocol()}`);
        s.end();
      });
      s.on('error', (e) => resolve(`error ${e.message}`));
    });
    expect(await tryTls('TLSv1.3')).toBe('ok TLSv1.3');
    expect(await tryTls('TLSv1.2')).toMatch(/^error .*(protocol version|alert)/);
  });

  it('refuses a revoked certificate on the next call of an open connection', async () => {
    const dir = await enrolled('site-rev');
    const c = createFederationClient(coord.federationEndpoint, createSiteChannelCredentials(dir));
    await heartbeat(c);
    const { serials } = revokeSite(coord.db, 'site-rev', 'test');
    expect(serials.length).toBe(1);
    const err = await refused(c);
    expect(err.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(err.details).toMatch(/^FEDLORA_ERR_CERT_REVOKED: certificate [0-9a-f]+ of site site-rev is revoked$/);
  });

  it('refuses a disabled site and an unknown site', async () => {
    const dir = await enrolled('site-dis');
    setSiteStatus(coord.db, 'site-dis', 'disabled');
    const err = await refused(createFederationClient(coord.federationEndpoint, createSiteChannelCredentials(dir)));
    expect(err.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(err.details).toMatch(/^FEDLORA_ERR_SITE_DISABLED: site site-dis is disabled/);

    // A certificate signed by our CA for a site that never enrolled (e.g. CA key misuse).
    const { cert, key } = await siteCert(coord.ca, 'site-ghost');
    const err2 = await refused(createFederationClient(coord.federationEndpoint, createClientCredentials({ ca: coord.ca.certPem, cert, key })));
    expect(err2.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(err2.details).toMatch(/^FEDLORA_ERR_SITE_UNKNOWN: site site-ghost .* not enrolled/);
  });
});
