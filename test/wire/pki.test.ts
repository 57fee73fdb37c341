// The CA and token primitives without a network: file modes, both key algorithms, CSR
// checks, certificate contents, token encoding, CLI wiring.
import { afterAll, describe, expect, it } from 'vitest';
import { readFileSync, rmSync, statSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import { initCa, signCsr, caPaths } from '../../certs/ca.ts';
import { createCsrPem, generateKeyPair, certSha256 } from '../../certs/x509.ts';
import { decodeJoinToken, encodeJoinToken, parseDuration, hashSecret } from '../../certs/tokens.ts';
import { issueJoinToken, enrollSite, revokeSite } from '../../coordinator/enrollment.ts';
import { openCoordinatorDb } from '../../coordinator/store/migrations.ts';
import { runProcess, runProcessOk } from '../runner/run-process.ts';
import { tempDir } from './helpers.ts';

const dirs: string[] = [];
const dir = (p: string) => {
  const d = tempDir(p);
  dirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('CA', () => {
  for (const algorithm of ['ecdsa-p256', 'rsa-3072'] as const) {
    it(`initialises a ${algorithm} CA with private key 0600 and signs a site CSR`, async () => {
      const d = dir('ca');
      const ca = await initCa({ dir: d, algorithm, validityDays: 5, commonName: 'Test CA' });
      expect(statSync(caPaths(d).key).mode & 0o777).toBe(0o600);
      expect(statSync(caPaths(d).cert).mode & 0o777).toBe(0o644);
      expect(readFileSync(caPaths(d).key, 'utf8')).toMatch(/^-----BEGIN PRIVATE KEY-----/);
      const caX = new X509Certificate(ca.certPem);
      expect(caX.ca).toBe(true);
      expect(caX.subject).toContain('CN=Test CA');
      expect(ca.sha256).toBe(certSha256(ca.certPem));
      const keys = await generateKeyPair('ecdsa-p256');
      const signed = await signCsr(ca, await createCsrPem(keys, 'site-1'), { siteId: 'site-1', validityDays: 2 });
      const x = new X509Certificate(signed.pem);
      expect(x.checkIssued(caX)).toBe(true);
      expect(x.verify(caX.publicKey)).toBe(true);
      expect(x.subjectAltName).toBe('URI:spiffe://fedlora/site/site-1');
      expect(x.ca).toBe(false);
      expect(signed.notAfter - Date.now()).toBeGreaterThan(2 * 86_400_000 - 60_000);
      expect(signed.notAfter - Date.now()).toBeLessThan(2 * 86_400_000 + 60_000);
      await expect(initCa({ dir: d })).rejects.toMatchObject({ code: 'FEDLORA_ERR_CONFIG' });
    });
  }

  it('rejects a CSR with a broken signature, a wrong CN or garbage', async () => {
    const ca = await initCa({ dir: dir('ca2'), validityDays: 5 });
    const keys = await generateKeyPair('ecdsa-p256');
    const good = await createCsrPem(keys, 'site-2');
    const der = Buffer.from(good.split('\n').filter((l) => !l.startsWith('-----')).join(''), 'base64');
    der[der.length - 5] ^= 0x01; // inside the signature
    await expect(signCsr(ca, der, { siteId: 'site-2', validityDays: 1 })).rejects.toMatchObject({ code: 'FEDLORA_ERR_CSR' });
    await expect(signCsr(ca, der, { siteId: 'site-2', validityDays: 1 })).rejects.toThrow(/signature/);
    await expect(signCsr(ca, good, { siteId: 'site-3', validityDays: 1 })).rejects.toThrow(/CN is "site-2", but the token was issued for site "site-3"/);
    await expect(signCsr(ca, 'not a csr', { siteId: 'site-2', validityDays: 1 })).rejects.toMatchObject({ code: 'FEDLORA_ERR_CSR' });
  });
});

describe('join tokens', () => {
  it('round-trips and rejects malformed tokens', () => {
    const t = { v: 1 as const, site: 's', secret: 'x'.repeat(43), enroll: 'h:1', caSha256: 'a'.repeat(64), exp: 5 };
    expect(decodeJoinToken(encodeJoinToken(t))).toEqual(t);
    expect(() => decodeJoinToken('nope')).toThrow(/must start with "fedlora1."/);
    expect(() => decodeJoinToken('fedlora1.!!!')).toThrow(/FEDLORA_ERR_TOKEN_INVALID|base64url JSON/);
    expect(() => decodeJoinToken(encodeJoinToken({ ...t, caSha256: 'zz' }))).toThrow(/caSha256/);
    expect(parseDuration('24h')).toBe(86_400_000);
    expect(parseDuration('30m')).toBe(1_800_000);
    expect(() => parseDuration('soon')).toThrow(/duration/);
  });

  it('stores only the hash; revoking a site kills its open tokens', async () => {
    const d = dir('tok');
    const ca = await initCa({ dir: join(d, 'pki'), validityDays: 5 });
    const db = openCoordinatorDb(join(d, 'c.sqlite'));
    const { token } = issueJoinToken(db, { siteId: 'site-t', ttlMs: 60_000, enrollEndpoint: 'h:1', caSha256: ca.sha256 });
    const secret = decodeJoinToken(token).secret;
    const rows = db.prepare('SELECT * FROM pki_tokens').all() as Record<string, unknown>[];
    expect(rows.length).toBe(1);
    expect(JSON.stringify(rows)).not.toContain(secret);
    expect(rows[0].token_hash).toBe(hashSecret(secret));
    const keys = await generateKeyPair('ecdsa-p256');
    const csr = await createCsrPem(keys, 'site-t');
    const r = await enrollSite(db, ca, { token: secret, csrPem: csr, federationEndpoint: 'h:2' });
    expect(r.siteId).toBe('site-t');
    const second = issueJoinToken(db, { siteId: 'site-t', ttlMs: 60_000, enrollEndpoint: 'h:1', caSha256: ca.sha256 });
    expect(revokeSite(db, 'site-t').serials).toEqual([r.serial]);
    await expect(enrollSite(db, ca, { token: decodeJoinToken(second.token).secret, csrPem: csr, federationEndpoint: 'h:2' })).rejects.toMatchObject({ code: 'FEDLORA_ERR_TOKEN_EXPIRED' });
    db.close();
  });
});

describe('CLI', () => {
  it('ca init, site invite and site revoke work end to end', async () => {
    const d = dir('cli');
    const bin = join(process.cwd(), 'cli', 'bin.mjs');
    const out = await runProcessOk(process.execPath, [bin, 'ca', 'init', '--data-dir', d, '--san', 'coord.example,10.1.2.3']);
    expect(out).toMatch(/CA sha256: [0-9a-f]{64}/);
    const server = new X509Certificate(readFileSync(join(d, 'pki', 'server.crt')));
    expect(server.subjectAltName).toContain('DNS:coord.example');
    expect(server.subjectAltName).toContain('IP Address:10.1.2.3');
    expect(server.subjectAltName).toContain('IP Address:127.0.0.1');
    const token = (await runProcessOk(process.execPath, [bin, 'site', 'invite', '--site', 'site-cli', '--ttl', '1h', '--data-dir', d, '--enroll-endpoint', 'coord.example:7444'])).trim();
    const t = decodeJoinToken(token);
    expect(t).toMatchObject({ site: 'site-cli', enroll: 'coord.example:7444', caSha256: out.match(/CA sha256: ([0-9a-f]{64})/)![1] });
    const bad = await runProcess(process.execPath, [bin, 'site', 'revoke', 'nobody', '--data-dir', d]);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/FEDLORA_ERR_SITE_UNKNOWN/);
  });
});
