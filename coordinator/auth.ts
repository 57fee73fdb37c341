// Who is calling the Federation service. The TLS handshake already required a client
// certificate chaining to the consortium CA (shared/tls.ts); here, on EVERY call, we derive
// the site id from that certificate (SAN URI spiffe://fedlora/site/<id>, CN must agree;
// never from a message body) and refuse revoked certificates, unknown/disabled/revoked
// sites and expired certificates (the latter matters when a connection outlives its cert).
import type { Database } from 'better-sqlite3-multiple-ciphers';
import { fail } from '../shared/errors.ts';
import { x509, normalizeSerial, siteIdOfCertificate, u8 } from '../certs/x509.ts';

export interface CallerIdentity {
  siteId: string;
  certSerial: string; // lowercase hex, no leading zeros
  notAfter: number; // unix ms
  notBefore: number; // unix ms
}

/** For HeartbeatResponse.renew_certificate: true when less than `fraction` of the validity is left. */
export function needsRenewal(id: Pick<CallerIdentity, 'notAfter' | 'notBefore'>, fraction = 0.3, now = Date.now()): boolean {
  return (id.notAfter - now) / Math.max(1, id.notAfter - id.notBefore) < fraction;
}

export type SiteAuthStatus = 'active' | 'disabled' | 'revoked';

/** What authenticateCall needs from the store (pkiAuthDeps reads coordinator.sqlite). */
export interface AuthDeps {
  /** undefined = never enrolled. */
  siteStatus(siteId: string): SiteAuthStatus | undefined;
  /** Is this serial (normalised lowercase hex) on the CRL? */
  isRevoked(serial: string): boolean;
  /** Optional: was this serial issued by us to this site? (false => refused as unknown). */
  isIssuedTo?(serial: string, siteId: string): boolean;
  now?(): number;
}

/** Anything with getAuthContext(): every grpc-js server call object. */
export interface CallWithAuth {
  getAuthContext(): { sslPeerCertificate?: { raw?: Buffer } } | null;
}

/** Default AuthDeps on the sites and pki_* tables (coordinator/enrollment.ts). */
export function pkiAuthDeps(db: Database): AuthDeps {
  const siteQ = db.prepare('SELECT status FROM sites WHERE id = ?');
  const crlQ = db.prepare('SELECT 1 FROM pki_crl WHERE serial = ?');
  const issuedQ = db.prepare('SELECT 1 FROM pki_certificates WHERE serial = ? AND site_id = ?');
  return {
    siteStatus: (id) => (siteQ.get(id) as { status: SiteAuthStatus } | undefined)?.status,
    isRevoked: (serial) => crlQ.get(serial) !== undefined,
    isIssuedTo: (serial, id) => issuedQ.get(serial, id) !== undefined,
  };
}

interface ParsedCert {
  siteId?: string;
  serial: string;
  notAfter: number;
  notBefore: number;
  subject: string;
  notAfterIso: string;
  notBeforeIso: string;
}

/** Parsed peer certificates by DER (parsing is the costly part; the CRL and site status are
 *  still looked up on every call). Bounded: the oldest entry goes first. */
const parsedCache = new Map<string, ParsedCert>();
const CACHE_MAX = 1024;

function parsePeer(raw: Buffer): ParsedCert {
  const key = raw.toString('base64');
  const hit = parsedCache.get(key);
  if (hit) return hit;
  let cert: x509.X509Certificate;
  try {
    cert = new x509.X509Certificate(u8(raw));
  } catch (e) {
    throw fail('FEDLORA_ERR_CERT_INVALID', `client certificate cannot be parsed: ${(e as Error).message}`);
  }
  const p: ParsedCert = {
    siteId: siteIdOfCertificate(cert), serial: normalizeSerial(cert.serialNumber), subject: cert.subject,
    notAfter: cert.notAfter.getTime(), notBefore: cert.notBefore.getTime(), notAfterIso: cert.notAfter.toISOString(), notBeforeIso: cert.notBefore.toISOString(),
  };
  if (parsedCache.size >= CACHE_MAX) parsedCache.delete(parsedCache.keys().next().value!);
  parsedCache.set(key, p);
  return p;
}

/** Authenticate a Federation call; throws a FedloraError (send it with toGrpcError). */
export function authenticateCall(call: CallWithAuth, deps: AuthDeps): CallerIdentity {
  const raw = call.getAuthContext()?.sslPeerCertificate?.raw;
  if (!raw || raw.length === 0) {
    throw fail('FEDLORA_ERR_UNAUTHENTICATED', 'no client certificate on this connection: the Federation service needs the site certificate issued at enrollment (mutual TLS)');
  }
  const c = parsePeer(raw);
  const siteId = c.siteId;
  if (!siteId) {
    throw fail('FEDLORA_ERR_CERT_INVALID', `client certificate ${c.subject} has no SAN URI spiffe://fedlora/site/<id> matching its CN`);
  }
  const serial = c.serial;
  const now = deps.now?.() ?? Date.now();
  if (deps.isRevoked(serial)) throw fail('FEDLORA_ERR_CERT_REVOKED', `certificate ${serial} of site ${siteId} is revoked`);
  const st = deps.siteStatus(siteId);
  if (st === undefined) throw fail('FEDLORA_ERR_SITE_UNKNOWN', `site ${siteId} (certificate ${serial}) is not enrolled at this coordinator`);
  if (st === 'revoked') throw fail('FEDLORA_ERR_CERT_REVOKED', `site ${siteId} is revoked`);
  if (st === 'disabled') throw fail('FEDLORA_ERR_SITE_DISABLED', `site ${siteId} is disabled by the operator`);
  if (deps.isIssuedTo && !deps.isIssuedTo(serial, siteId)) {
    throw fail('FEDLORA_ERR_SITE_UNKNOWN', `certificate ${serial} was not issued to site ${siteId} by this coordinator`);
  }
  if (c.notAfter <= now) throw fail('FEDLORA_ERR_CERT_EXPIRED', `certificate ${serial} of site ${siteId} expired at ${c.notAfterIso}: renew or re-enroll`);
  if (c.notBefore > now + 5 * 60_000) throw fail('FEDLORA_ERR_CERT_INVALID', `certificate ${serial} of site ${siteId} is not valid before ${c.notBeforeIso}`);
  return { siteId, certSerial: serial, notAfter: c.notAfter, notBefore: c.notBefore };
}
