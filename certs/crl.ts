// The consortium's certificate revocation list as an X.509 CRL signed by the CA, so the
// federation listener's TLS handshake itself refuses a revoked site certificate (OpenSSL checks
// the CRL; per-call checks in coordinator/auth.ts stay for connections opened before).
import { fail } from '../shared/errors.ts';
import type { LoadedCa } from './ca.ts';
import { x509, signingAlgorithm } from './x509.ts';

/** How long a CRL is valid: re-signed well before (coordinator/crl-watch.ts), never allowed to lapse. */
export const CRL_VALIDITY_MS = 30 * 86_400_000;

export interface RevokedSerial {
  /** lowercase hex, as pki_crl stores it */
  serial: string;
  revokedAtMs: number;
}

export async function signCrl(ca: LoadedCa, revoked: RevokedSerial[], now = Date.now()): Promise<string> {
  for (const r of revoked) if (!/^[0-9a-f]+$/.test(r.serial)) throw fail('FEDLORA_ERR_CERT_INVALID', `pki_crl serial ${JSON.stringify(r.serial)} is not hex`);
  const crl = await x509.X509CrlGenerator.create({
    issuer: ca.cert.subject,
    thisUpdate: new Date(now - 60_000), // a minute back: a peer whose clock is slightly behind still takes it
    nextUpdate: new Date(now + CRL_VALIDITY_MS),
    entries: revoked.map((r) => ({ serialNumber: r.serial.length % 2 ? `0${r.serial}` : r.serial, revocationDate: new Date(r.revokedAtMs) })),
    extensions: [await x509.AuthorityKeyIdentifierExtension.create(ca.cert, false)],
    signingAlgorithm: signingAlgorithm(ca.algorithm),
    signingKey: ca.signingKey,
  });
  return x509.PemConverter.encode(crl.rawData, 'X509 CRL'); // OpenSSL's label (the library writes "CRL")
}
