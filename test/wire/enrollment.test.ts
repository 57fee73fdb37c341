// Enrollment over real gRPC (server-auth TLS 1.3, CA pinned from the token) and the
// one-time / expiring nature of join tokens.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, rmSync, statSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { enrollSite, renewIfNeeded, readEnrollment } from '../../site-agent/enroll.ts';
import { issueJoinToken, enrollSite as coordinatorEnroll } from '../../coordinator/enrollment.ts';
import { decodeJoinToken } from '../../certs/tokens.ts';
import { createCsrPem, generateKeyPair } from '../../certs/x509.ts';
import { createFederationClient, unary } from '../../shared/proto.ts';
import { createSiteChannelCredentials, sitePaths } from '../../shared/tls.ts';
import { isFedloraError } from '../../shared/errors.ts';
import { startCoordinator, tempDir, type TestCoordinator } from './helpers.ts';

let coord: TestCoordinator;
const dirs: string[] = [];
const siteDir = () => {
  const d = tempDir('site');
  dirs.push(d);
  return d;
};

beforeAll(async () => {
  coord = await startCoordinator();
});
afterAll(async () => {
  await coord.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function invite(site: string, ttlMs = 3_600_000): string {
  return issueJoinToken(coord.db, { siteId: site, ttlMs, enrollEndpoint: coord.enrollEndpoint, caSha256: coord.ca.sha256 }).token;
}

async function expectCode(p: Promise<unknown>, code: string, msg?: RegExp): Promise<void> {
  const e = await p.then(() => null, (err) => err);
  expect(e, `expected ${code}`).not.toBeNull();
  expect(isFedloraError(e) ? e.code : String(e)).toBe(code);
  if (msg) expect(e.message).toMatch(msg);
}

describe('enrollment', () => {
  it('enrolls a site: key 0600, key never sent, cert names the site, mutual TLS then works', async () => {
    const dir = siteDir();
    const token = invite('site-a');
    let sent: { token: string; csrPem: Buffer } | undefined;
    const rec = await enrollSite({ token, siteDir: dir, onRequest: (r) => (sent = r) });
    expect(rec.siteId).toBe('site-a');
    expect(rec.federationEndpoint).toBe(coord.federationEndpoint);
    const p = sitePaths(dir);
    expect(statSync(p.key).mode & 0o777).toBe(0o600);
    const keyPem = readFileSync(p.key, 'utf8');
    const keyB64 = keyPem.split('\n').filter((l) => !l.startsWith('-----')).join('');
    // Only the secret and the CSR travel: no private key material in the request bytes.
    expect(sent).toBeDefined();
    const reqText = JSON.stringify({ ...sent, csrPem: sent!.csrPem.toString('utf8') });
    expect(reqText).not.toContain('PRIVATE KEY');
    expect(reqText).not.toContain(keyB64.slice(20, 80));
    expect(sent!.token).toBe(decodeJoinToken(token).secret);
    expect(sent!.token).not.toBe(token); // the CA pin / endpoint never need to be sent
    // Only the hash of the secret is stored.
    const rows = coord.db.prepare('SELECT token_hash FROM pki_tokens').all() as { token_hash: string }[];
    expect(rows.some((r) => r.token_hash === sent!.token)).toBe(false);

    const cert = new X509Certificate(readFileSync(p.cert));
    expect(cert.subject).toContain('CN=site-a');
    expect(cert.subjectAltName).toBe('URI:spiffe://fedlora/site/site-a');
    expect(cert.checkIssued(new X509Certificate(readFileSync(p.ca)))).toBe(true);
    expect(cert.keyUsage).toContain('1.3.6.1.5.5.7.3.2'); // clientAuth EKU

    const client = createFederationClient(rec.federationEndpoint, createSiteChannelCredentials(dir));
    const hb = await unary(client.heartbeat.bind(client), { agentVersion: 't', state: 'idle' });
    expect(Math.abs(hb.serverTimeUnixMs - Date.now())).toBeLessThan(60_000);
    expect(coord.seen.at(-1)?.siteId).toBe('site-a');
    client.close();
  });

  it('a token cannot be used twice, even concurrently', async () => {
    const token = invite('site-b');
    const results = await Promise.allSettled([enrollSite({ token, siteDir: siteDir() }), enrollSite({ token, siteDir: siteDir() })]);
    const ok = results.filter((r) => r.status === 'fulfilled');
    const bad = results.filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
    expect(ok.length).toBe(1);
    expect(bad.length).toBe(1);
    expect(bad[0].reason.code).toBe('FEDLORA_ERR_TOKEN_USED');
    await expectCode(enrollSite({ token, siteDir: siteDir() }), 'FEDLORA_ERR_TOKEN_USED', /already used/);
    const n = coord.db.prepare("SELECT COUNT(*) AS n FROM pki_certificates WHERE site_id = 'site-b'").get() as { n: number };
    expect(n.n).toBe(1); // the losing call's certificate was never recorded
  });

  it('expired and unknown tokens are refused', async () => {
    const expired = issueJoinToken(coord.db, { siteId: 'site-c', ttlMs: 1000, enrollEndpoint: coord.enrollEndpoint, caSha256: coord.ca.sha256, now: Date.now() - 5000 }).token;
    await expectCode(enrollSite({ token: expired, siteDir: siteDir() }), 'FEDLORA_ERR_TOKEN_EXPIRED', /expired at/);
    const t = decodeJoinToken(invite('site-c'));
    const forged = 'fedlora1.' + Buffer.from(JSON.stringify({ ...t, secret: 'x'.repeat(43) })).toString('base64url');
    await expectCode(enrollSite({ token: forged, siteDir: siteDir() }), 'FEDLORA_ERR_TOKEN_INVALID', /unknown join token/);
  });

  it('refuses a CSR whose CN is not the invited site, and keeps the token usable', async () => {
    const token = invite('site-d');
    const keys = await generateKeyPair('ecdsa-p256');
    const csr = await createCsrPem(keys, 'site-other');
    await expectCode(coordinatorEnroll(coord.db, coord.ca, { token: decodeJoinToken(token).secret, csrPem: csr, federationEndpoint: 'x:1' }), 'FEDLORA_ERR_CSR', /CN is "site-other"/);
    const rec = await enrollSite({ token, siteDir: siteDir() });
    expect(rec.siteId).toBe('site-d');
  });

  it('refuses to enroll when the listener does not present the pinned CA', async () => {
    const t = decodeJoinToken(invite('site-e'));
    const wrongPin = 'fedlora1.' + Buffer.from(JSON.stringify({ ...t, caSha256: '0'.repeat(64) })).toString('base64url');
    await expectCode(enrollSite({ token: wrongPin, siteDir: siteDir() }), 'FEDLORA_ERR_CERT_INVALID', /pinned/);
  });

  it('renews a certificate before expiry with a new key', async () => {
    const dir = siteDir();
    await enrollSite({ token: invite('site-f'), siteDir: dir });
    const before = new X509Certificate(readFileSync(sitePaths(dir).cert));
    const keyBefore = readFileSync(sitePaths(dir).key, 'utf8');
    const client = createFederationClient(coord.federationEndpoint, createSiteChannelCredentials(dir));
    const notNeeded = await renewIfNeeded(dir, client, { thresholdFraction: 0.3 });
    expect(notNeeded.renewed).toBe(false);
    // Pretend we are at 80% of the validity.
    const nb = Date.parse(before.validFrom), na = Date.parse(before.validTo);
    const r = await renewIfNeeded(dir, client, { thresholdFraction: 0.3, now: nb + 0.8 * (na - nb) });
    client.close();
    expect(r.renewed).toBe(true);
    const after = new X509Certificate(readFileSync(sitePaths(dir).cert));
    expect(after.serialNumber).not.toBe(before.serialNumber);
    expect(readFileSync(sitePaths(dir).key, 'utf8')).not.toBe(keyBefore);
    expect(statSync(sitePaths(dir).key).mode & 0o777).toBe(0o600);
    expect(readEnrollment(dir).notAfterUnixMs).toBe(r.notAfterUnixMs);
    const c2 = createFederationClient(coord.federationEndpoint, createSiteChannelCredentials(dir));
    await unary(c2.heartbeat.bind(c2), {});
    expect(coord.seen.at(-1)?.certSerial).toBe(after.serialNumber.toLowerCase().replace(/^0+/, ''));
    c2.close();
  });

  it('does not overwrite an enrolled site dir without force', async () => {
    const dir = siteDir();
    await enrollSite({ token: invite('site-g'), siteDir: dir });
    await expectCode(enrollSite({ token: invite('site-g'), siteDir: dir }), 'FEDLORA_ERR_CONFIG', /already enrolled/);
    expect(grpc.status.OK).toBe(0);
  });
});
