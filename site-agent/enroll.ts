// Site side of enrollment and certificate renewal.
//   1. Decode the join token (site id, secret, enrollment endpoint, CA sha256 pin).
//   2. Make the site's ECDSA P-256 key HERE, write it 0600 (it never leaves the site; the
//      request carries only the CSR).
//   3. Fetch the CA certificate from the enrollment listener's TLS chain and accept it only if
//      its sha256 equals the pin in the token; then talk gRPC over TLS 1.3 verified against it.
//   4. Check the response (CA = pinned CA, certificate chains to it, holds our public key,
//      names our site) and save site.crt, ca.crt and enrollment.json in the site dir.
import { connect as tlsConnect, type PeerCertificate, type DetailedPeerCertificate } from 'node:tls';
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import { createPublicKey, X509Certificate as NodeX509 } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { fail, fromGrpcError } from '../shared/errors.ts';
import { createEnrollmentClient, unary, type EnrollResponse, type FederationClient, type RenewResponse } from '../shared/proto.ts';
import { createClientCredentials, sitePaths, TLS_MIN_VERSION } from '../shared/tls.ts';
import { decodeJoinToken } from '../certs/tokens.ts';
import { createCsrPem, derSha256, exportPrivateKeyPem, generateKeyPair, writeFileAtomic, x509, siteIdOfCertificate, u8 } from '../certs/x509.ts';

export const AGENT_VERSION = '0.1.0';

export interface EnrollmentRecord {
  siteId: string;
  federationEndpoint: string;
  enrollEndpoint: string;
  caSha256: string;
  notAfterUnixMs: number;
  enrolledAtMs: number;
}

function splitHostPort(endpoint: string): { host: string; port: number } {
  const m = /^\[?([^\]]+)\]?:(\d+)$/.exec(endpoint);
  if (!m) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `endpoint ${JSON.stringify(endpoint)} must be host:port`);
  return { host: m[1], port: Number(m[2]) };
}

/** Connect once (TLS 1.3, no trust yet) and return the CA certificate from the server's chain
 *  whose sha256 equals `pin`. Nothing else is sent on this connection. */
function fetchPinnedCa(endpoint: string, pin: string, timeoutMs = 10_000): Promise<string> {
  const { host, port } = splitHostPort(endpoint);
  return new Promise((resolve, reject) => {
    const sock = tlsConnect({ host, port, rejectUnauthorized: false, minVersion: TLS_MIN_VERSION, servername: /^[\d.:]+$/.test(host) ? undefined : host });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(fail('FEDLORA_ERR_UNAVAILABLE', `enrollment listener ${endpoint} did not complete a TLS handshake in ${timeoutMs} ms`));
    }, timeoutMs);
    sock.once('error', (e) => {
      clearTimeout(timer);
      reject(fail('FEDLORA_ERR_UNAVAILABLE', `cannot reach enrollment listener ${endpoint}: ${e.message}`));
    });
    sock.once('secureConnect', () => {
      clearTimeout(timer);
      const seen = new Set<string>();
      let c: PeerCertificate | DetailedPeerCertificate | undefined = sock.getPeerCertificate(true);
      let found: Buffer | undefined;
      while (c && c.raw && !seen.has(derSha256(c.raw))) {
        const h = derSha256(c.raw);
        seen.add(h);
        if (h === pin) found = c.raw;
        c = (c as DetailedPeerCertificate).issuerCertificate;
      }
      sock.end();
      if (!found) {
        reject(fail('FEDLORA_ERR_CERT_INVALID', `enrollment listener ${endpoint} did not present the CA pinned in the join token (sha256 ${pin}); refusing to enroll`));
        return;
      }
      resolve(x509.PemConverter.encode(u8(found), 'CERTIFICATE'));
    });
  });
}

/** Does `certPem` chain to `caPem` and hold the public key of `keyPem`? */
async function checkIssuedCertificate(certPem: string, caPem: string, publicKeyPem: string, siteId: string): Promise<x509.X509Certificate> {
  const cert = new x509.X509Certificate(certPem);
  const ca = new x509.X509Certificate(caPem);
  if (!(await cert.verify({ publicKey: ca.publicKey, signatureOnly: true }))) {
    throw fail('FEDLORA_ERR_CERT_INVALID', 'the certificate returned by the coordinator is not signed by the pinned CA');
  }
  const got = new NodeX509(certPem).publicKey.export({ type: 'spki', format: 'pem' });
  if (got !== publicKeyPem) throw fail('FEDLORA_ERR_CERT_INVALID', 'the certificate returned by the coordinator is for a different public key than our CSR');
  const id = siteIdOfCertificate(cert);
  if (id !== siteId) throw fail('FEDLORA_ERR_CERT_INVALID', `the certificate returned by the coordinator names site ${JSON.stringify(id)}, expected ${JSON.stringify(siteId)}`);
  return cert;
}

export interface EnrollOptions {
  token: string;
  siteDir: string;
  /** host:port of the enrollment listener; defaults to the one inside the token. */
  coordinator?: string;
  agentVersion?: string;
  /** Replace an existing enrollment in siteDir. */
  force?: boolean;
  /** Observer for tests: sees the exact request object sent (to prove no key leaves). */
  onRequest?: (req: { token: string; csrPem: Buffer; agentVersion: string }) => void;
}

export async function enrollSite(o: EnrollOptions): Promise<EnrollmentRecord> {
  const t = decodeJoinToken(o.token);
  const endpoint = o.coordinator ?? t.enroll;
  const p = sitePaths(o.siteDir);
  if (existsSync(p.cert) && !o.force) {
    throw fail('FEDLORA_ERR_CONFIG', `${p.cert} exists: ${o.siteDir} is already enrolled (pass --force to enroll again with a new key)`);
  }
  mkdirSync(o.siteDir, { recursive: true, mode: 0o700 });
  const caPem = await fetchPinnedCa(endpoint, t.caSha256);

  const keys = await generateKeyPair('ecdsa-p256');
  const keyPem = await exportPrivateKeyPem(keys.privateKey);
  const pubPem = createPublicKey(keyPem).export({ type: 'spki', format: 'pem' }) as string;
  // The new key is written 0600 next to the old one and swapped in only with its certificate.
  const pendingKey = `${p.key}.pending`;
  writeFileAtomic(pendingKey, keyPem, 0o600);
  const csrPem = await createCsrPem(keys, t.site);

  const client = createEnrollmentClient(endpoint, createClientCredentials({ ca: caPem }));
  const req = { token: t.secret, csrPem: Buffer.from(csrPem), agentVersion: o.agentVersion ?? AGENT_VERSION };
  o.onRequest?.(req);
  let res: EnrollResponse;
  try {
    res = await unary(client.enroll.bind(client), req, { deadline: Date.now() + 30_000 });
  } catch (e) {
    throw fromGrpcError(e as grpc.ServiceError);
  } finally {
    client.close();
  }
  const resCa = Buffer.from(res.caCertificatePem).toString('utf8');
  if (derSha256(new NodeX509(resCa).raw) !== t.caSha256) throw fail('FEDLORA_ERR_CERT_INVALID', 'EnrollResponse.ca_certificate_pem is not the CA pinned in the join token');
  const certPem = Buffer.from(res.certificatePem).toString('utf8');
  const cert = await checkIssuedCertificate(certPem, resCa, pubPem, t.site);

  writeFileAtomic(p.ca, resCa, 0o644);
  writeFileAtomic(p.cert, certPem, 0o644);
  renameSync(pendingKey, p.key);
  const rec: EnrollmentRecord = {
    siteId: res.siteId,
    federationEndpoint: res.federationEndpoint,
    enrollEndpoint: endpoint,
    caSha256: t.caSha256,
    notAfterUnixMs: cert.notAfter.getTime(),
    enrolledAtMs: Date.now(),
  };
  writeFileAtomic(p.enrollment, JSON.stringify(rec, null, 2) + '\n', 0o644);
  return rec;
}

export function readEnrollment(siteDir: string): EnrollmentRecord {
  const p = sitePaths(siteDir);
  if (!existsSync(p.enrollment)) throw fail('FEDLORA_ERR_CONFIG', `${p.enrollment} missing: run \`fedlora site enroll\` for ${siteDir}`);
  return JSON.parse(readFileSync(p.enrollment, 'utf8')) as EnrollmentRecord;
}

export interface RenewOptions {
  /** Renew when less than this fraction of the validity remains (default 0.3). */
  thresholdFraction?: number;
  now?: number;
  force?: boolean;
}

/**
 * Renew the site certificate (new key, new CSR, Federation.RenewCertificate over the current
 * mutual-TLS channel) when less than `thresholdFraction` of its validity remains. After a
 * renewal the caller must build a new channel (createSiteChannelCredentials reads the files).
 */
export async function renewIfNeeded(siteDir: string, client: FederationClient, o: RenewOptions = {}): Promise<{ renewed: boolean; notAfterUnixMs: number }> {
  const p = sitePaths(siteDir);
  const current = new x509.X509Certificate(readFileSync(p.cert, 'utf8'));
  const siteId = siteIdOfCertificate(current);
  if (!siteId) throw fail('FEDLORA_ERR_CERT_INVALID', `${p.cert} is not a fedlora site certificate`);
  const now = o.now ?? Date.now();
  const nb = current.notBefore.getTime();
  const na = current.notAfter.getTime();
  const remaining = (na - now) / Math.max(1, na - nb);
  if (!o.force && remaining >= (o.thresholdFraction ?? 0.3)) return { renewed: false, notAfterUnixMs: na };

  const keys = await generateKeyPair('ecdsa-p256');
  const keyPem = await exportPrivateKeyPem(keys.privateKey);
  const pubPem = createPublicKey(keyPem).export({ type: 'spki', format: 'pem' }) as string;
  const pendingKey = `${p.key}.pending`;
  writeFileAtomic(pendingKey, keyPem, 0o600);
  let res: RenewResponse;
  try {
    res = await unary(client.renewCertificate.bind(client), { csrPem: Buffer.from(await createCsrPem(keys, siteId)) }, { deadline: Date.now() + 30_000 });
  } catch (e) {
    throw fromGrpcError(e as grpc.ServiceError);
  }
  const certPem = Buffer.from(res.certificatePem).toString('utf8');
  const cert = await checkIssuedCertificate(certPem, readFileSync(p.ca, 'utf8'), pubPem, siteId);
  // Keep the previous pair until the new one is in place; a crash in between leaves a
  // .pending key that the next renewal overwrites.
  writeFileAtomic(`${p.cert}.pending`, certPem, 0o644);
  renameSync(pendingKey, p.key);
  renameSync(`${p.cert}.pending`, p.cert);
  if (existsSync(p.enrollment)) {
    const rec = readEnrollment(siteDir);
    writeFileAtomic(p.enrollment, JSON.stringify({ ...rec, notAfterUnixMs: cert.notAfter.getTime() }, null, 2) + '\n', 0o644);
  }
  return { renewed: true, notAfterUnixMs: cert.notAfter.getTime() };
}

/**
 * Local check of the site's credentials, for when the Federation listener drops the TLS
 * handshake (a server refusing a client certificate closes the connection without telling
 * why): throws FEDLORA_ERR_CERT_EXPIRED / FEDLORA_ERR_CERT_INVALID / FEDLORA_ERR_CONFIG
 * naming the file, or returns the site id and expiry when the files look right.
 */
export async function diagnoseSiteCredentials(siteDir: string, now = Date.now()): Promise<{ siteId: string; notAfterUnixMs: number }> {
  const p = sitePaths(siteDir);
  for (const f of [p.key, p.cert, p.ca]) {
    if (!existsSync(f)) throw fail('FEDLORA_ERR_CONFIG', `${f} missing: run \`fedlora site enroll\` for ${siteDir}`);
  }
  const certPem = readFileSync(p.cert, 'utf8');
  const cert = new x509.X509Certificate(certPem);
  const ca = new x509.X509Certificate(readFileSync(p.ca, 'utf8'));
  if (!(await cert.verify({ publicKey: ca.publicKey, signatureOnly: true }))) {
    throw fail('FEDLORA_ERR_CERT_INVALID', `${p.cert} is not signed by the CA in ${p.ca}`);
  }
  const keyPub = createPublicKey(readFileSync(p.key, 'utf8')).export({ type: 'spki', format: 'pem' });
  if (new NodeX509(certPem).publicKey.export({ type: 'spki', format: 'pem' }) !== keyPub) {
    throw fail('FEDLORA_ERR_CERT_INVALID', `${p.cert} does not belong to the private key ${p.key}`);
  }
  if (cert.notAfter.getTime() <= now) throw fail('FEDLORA_ERR_CERT_EXPIRED', `${p.cert} expired at ${cert.notAfter.toISOString()}: ask for a new join token and enroll again`);
  const siteId = siteIdOfCertificate(cert);
  if (!siteId) throw fail('FEDLORA_ERR_CERT_INVALID', `${p.cert} has no spiffe://fedlora/site/<id> SAN`);
  return { siteId, notAfterUnixMs: cert.notAfter.getTime() };
}
