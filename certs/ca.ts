// The consortium certificate authority. It lives in the coordinator's data dir (never the
// repo): <dataDir>/pki/ca.crt (0644), ca.key (0600, PKCS#8), plus the coordinator's own TLS
// server certificate (server.crt/server.key) and the key that signs publication manifests
// (manifest-signing.crt/.key, a CA-issued certificate so sites can check it chains to the CA).
//
// Site certificates: subject CN = site id, SAN URI spiffe://fedlora/site/<id>, keyUsage
// digitalSignature, extKeyUsage clientAuth. The coordinator takes the site id from the SAN
// URI (and requires the CN to agree), never from a message body.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { fail } from '../shared/errors.ts';
import {
  x509, type KeyAlgorithm, generateKeyPair, exportPrivateKeyPem, importPrivateKeyPem, randomSerial,
  signingAlgorithm, writeFileAtomic, u8, assertSiteId, commonNameOf, SPIFFE_PREFIX, certSha256,
} from './x509.ts';

const DAY_MS = 86_400_000;
/** Backdate notBefore a little so a site whose clock is slightly behind accepts a fresh cert. */
const CLOCK_SKEW_MS = 5 * 60_000;

export interface LoadedCa {
  dir: string;
  certPem: string;
  cert: x509.X509Certificate;
  signingKey: CryptoKey;
  algorithm: KeyAlgorithm;
  /** sha256 of the CA certificate DER, lowercase hex: what join tokens pin. */
  sha256: string;
}

export interface InitCaOptions {
  dir: string; // the pki dir, e.g. <dataDir>/pki
  commonName?: string;
  algorithm?: KeyAlgorithm;
  validityDays?: number;
  /** Refuse to overwrite an existing CA unless true. */
  force?: boolean;
}

export const caPaths = (dir: string) => ({
  cert: join(dir, 'ca.crt'),
  key: join(dir, 'ca.key'),
  serverCert: join(dir, 'server.crt'),
  serverKey: join(dir, 'server.key'),
  signingCert: join(dir, 'manifest-signing.crt'),
  signingKey: join(dir, 'manifest-signing.key'),
});

/** Create a self-signed CA (ca.crt 0644 + ca.key 0600) in `dir`. */
export async function initCa(opts: InitCaOptions): Promise<LoadedCa> {
  const p = caPaths(opts.dir);
  if (existsSync(p.key) && !opts.force) {
    throw fail('FEDLORA_ERR_CONFIG', `${p.key} already exists: a CA is already initialised there (pass force to replace it, which invalidates every site certificate)`);
  }
  const algorithm = opts.algorithm ?? 'ecdsa-p256';
  const validityDays = opts.validityDays ?? 3650;
  if (!(validityDays > 0)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `CA validityDays must be > 0, got ${validityDays}`);
  mkdirSync(opts.dir, { recursive: true, mode: 0o700 });
  const keys = await generateKeyPair(algorithm);
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: `CN=${opts.commonName ?? 'fedlora consortium CA'}, O=fedlora`,
    notBefore: new Date(now - CLOCK_SKEW_MS),
    notAfter: new Date(now + validityDays * DAY_MS),
    keys,
    signingAlgorithm: signingAlgorithm(algorithm),
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const keyPem = await exportPrivateKeyPem(keys.privateKey);
  writeFileAtomic(p.key, keyPem, 0o600);
  writeFileAtomic(p.cert, cert.toString('pem'), 0o644);
  return loadCa(opts.dir);
}

export async function loadCa(dir: string): Promise<LoadedCa> {
  const p = caPaths(dir);
  if (!existsSync(p.cert) || !existsSync(p.key)) {
    throw fail('FEDLORA_ERR_CONFIG', `no CA in ${dir} (missing ca.crt or ca.key): run \`fedlora ca init --data-dir ...\` first`);
  }
  const certPem = readFileSync(p.cert, 'utf8');
  const { key, alg } = await importPrivateKeyPem(readFileSync(p.key, 'utf8'));
  return { dir, certPem, cert: new x509.X509Certificate(certPem), signingKey: key, algorithm: alg, sha256: certSha256(certPem) };
}

export interface IssueOptions {
  subject: string; // DN, e.g. "CN=site-a"
  publicKey: CryptoKey | x509.PublicKey;
  validityDays: number;
  /** Override the validity window (tests make expired certificates this way). */
  notBefore?: Date;
  notAfter?: Date;
  sans?: { type: 'dns' | 'ip' | 'url'; value: string }[];
  usage: 'server' | 'client' | 'signing';
  serial?: string;
}

/** Low-level issue: sign a leaf certificate with the CA key. */
export async function issueCertificate(ca: LoadedCa, o: IssueOptions): Promise<{ pem: string; cert: x509.X509Certificate; serial: string }> {
  const now = Date.now();
  const serial = o.serial ?? randomSerial();
  const ku = o.usage === 'server'
    ? x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment
    : x509.KeyUsageFlags.digitalSignature;
  const eku = o.usage === 'server' ? [x509.ExtendedKeyUsage.serverAuth] : o.usage === 'client' ? [x509.ExtendedKeyUsage.clientAuth] : [];
  const pub = o.publicKey instanceof x509.PublicKey ? o.publicKey : o.publicKey;
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(ku, true),
    await x509.SubjectKeyIdentifierExtension.create(pub),
    await x509.AuthorityKeyIdentifierExtension.create(ca.cert, false),
  ];
  if (eku.length) extensions.push(new x509.ExtendedKeyUsageExtension(eku, false));
  if (o.sans?.length) extensions.push(new x509.SubjectAlternativeNameExtension(o.sans, false));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial,
    subject: o.subject,
    issuer: ca.cert.subject,
    notBefore: o.notBefore ?? new Date(now - CLOCK_SKEW_MS),
    notAfter: o.notAfter ?? new Date(now + o.validityDays * DAY_MS),
    publicKey: pub,
    signingKey: ca.signingKey,
    signingAlgorithm: signingAlgorithm(ca.algorithm),
    extensions,
  });
  return { pem: cert.toString('pem'), cert, serial };
}

export interface SignCsrOptions {
  siteId: string;
  validityDays: number;
}

export interface SignedSiteCertificate {
  pem: string;
  serial: string;
  notBefore: number; // unix ms
  notAfter: number;
  sha256: string;
}

/**
 * Check a site's CSR (PEM or DER; signature valid, subject CN = siteId) and issue its client
 * certificate. The CSR carries only the public key; the private key stays at the site.
 */
export async function signCsr(ca: LoadedCa, csrPem: string | Buffer, o: SignCsrOptions): Promise<SignedSiteCertificate> {
  assertSiteId(o.siteId, 'signCsr');
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(typeof csrPem === 'string' ? csrPem : csrPem.toString('utf8').includes('-----BEGIN') ? csrPem.toString('utf8') : u8(csrPem));
  } catch (e) {
    throw fail('FEDLORA_ERR_CSR', `csr_pem is not a PKCS#10 certificate request: ${(e as Error).message}`);
  }
  if (/PRIVATE KEY/.test(typeof csrPem === 'string' ? csrPem : csrPem.toString('latin1'))) {
    throw fail('FEDLORA_ERR_CSR', 'csr_pem contains a private key: only the CSR may leave the site');
  }
  let ok = false;
  try {
    ok = await csr.verify();
  } catch (e) {
    throw fail('FEDLORA_ERR_CSR', `csr_pem signature cannot be checked: ${(e as Error).message}`);
  }
  if (!ok) throw fail('FEDLORA_ERR_CSR', 'csr_pem signature does not verify with its own public key');
  const cn = commonNameOf(csr.subjectName);
  if (cn !== o.siteId) {
    throw fail('FEDLORA_ERR_CSR', `csr_pem subject CN is ${JSON.stringify(cn ?? null)}, but the token was issued for site ${JSON.stringify(o.siteId)}`);
  }
  const alg = csr.publicKey.algorithm as { name: string; namedCurve?: string; modulusLength?: number };
  // What sites generate (certs/x509.ts): ECDSA P-256 or RSA-3072; other curves and short RSA moduli are refused.
  if (!(alg.name === 'ECDSA' && alg.namedCurve === 'P-256') && !(alg.name === 'RSASSA-PKCS1-v1_5' && (alg.modulusLength ?? 0) >= 2048)) {
    const what = alg.name === 'ECDSA' ? `ECDSA ${alg.namedCurve ?? '?'}` : alg.modulusLength ? `${alg.name} ${alg.modulusLength}-bit` : alg.name;
    throw fail('FEDLORA_ERR_CSR', `csr_pem public key algorithm ${what} not accepted (ECDSA P-256 or RSA >= 2048 bits)`);
  }
  if (!(o.validityDays > 0)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `validityDays must be > 0, got ${o.validityDays}`);
  const { pem, cert, serial } = await issueCertificate(ca, {
    subject: `CN=${o.siteId}`,
    publicKey: csr.publicKey,
    validityDays: o.validityDays,
    sans: [{ type: 'url', value: `${SPIFFE_PREFIX}${o.siteId}` }],
    usage: 'client',
  });
  return { pem, serial, notBefore: cert.notBefore.getTime(), notAfter: cert.notAfter.getTime(), sha256: certSha256(pem) };
}

/** Split "host,ip,..." into SAN entries (IPs become iPAddress names, the rest DNS names). */
function parseSans(list: string[]): { type: 'dns' | 'ip'; value: string }[] {
  return list.map((s) => s.trim()).filter(Boolean).map((v) => ({ type: isIP(v) ? 'ip' as const : 'dns' as const, value: v }));
}

/**
 * Issue the coordinator's TLS server certificate (server.crt/server.key in the CA dir).
 * SANs always include localhost and 127.0.0.1 in addition to the given names.
 */
export async function issueServerCertificate(ca: LoadedCa, o: { sans?: string[]; validityDays?: number; commonName?: string }): Promise<{ certPem: string; keyPem: string }> {
  const names = Array.from(new Set(['localhost', '127.0.0.1', ...(o.sans ?? [])]));
  const keys = await generateKeyPair('ecdsa-p256');
  const { pem } = await issueCertificate(ca, {
    subject: `CN=${o.commonName ?? names.find((n) => n !== 'localhost' && n !== '127.0.0.1') ?? 'localhost'}, O=fedlora`,
    publicKey: keys.publicKey,
    validityDays: o.validityDays ?? 825,
    sans: parseSans(names),
    usage: 'server',
  });
  const keyPem = await exportPrivateKeyPem(keys.privateKey);
  const p = caPaths(ca.dir);
  writeFileAtomic(p.serverKey, keyPem, 0o600);
  writeFileAtomic(p.serverCert, pem, 0o644);
  return { certPem: pem, keyPem };
}

/** Issue the key that signs publication manifests (manifest-signing.crt/.key in the CA dir). */
export async function issueManifestSigningKey(ca: LoadedCa, o: { validityDays?: number } = {}): Promise<{ certPem: string; keyPem: string }> {
  const keys = await generateKeyPair('ecdsa-p256');
  const { pem } = await issueCertificate(ca, {
    subject: 'CN=fedlora manifest signing, O=fedlora',
    publicKey: keys.publicKey,
    validityDays: o.validityDays ?? 3650,
    usage: 'signing',
  });
  const keyPem = await exportPrivateKeyPem(keys.privateKey);
  const p = caPaths(ca.dir);
  writeFileAtomic(p.signingKey, keyPem, 0o600);
  writeFileAtomic(p.signingCert, pem, 0o644);
  return { certPem: pem, keyPem };
}

/** The coordinator's server key pair + CA as PEM, for building TLS server credentials. */
export function readServerPki(pkiDir: string): { caPem: string; certPem: string; keyPem: string } {
  const p = caPaths(pkiDir);
  for (const f of [p.cert, p.serverCert, p.serverKey]) {
    if (!existsSync(f)) throw fail('FEDLORA_ERR_CONFIG', `missing ${f}: run \`fedlora ca init\` for this data dir`);
  }
  return { caPem: readFileSync(p.cert, 'utf8'), certPem: readFileSync(p.serverCert, 'utf8'), keyPem: readFileSync(p.serverKey, 'utf8') };
}

/** Manifest signing key + certificate (PEM) for the publisher. */
export function readManifestSigner(pkiDir: string): { certPem: string; keyPem: string } {
  const p = caPaths(pkiDir);
  if (!existsSync(p.signingKey)) throw fail('FEDLORA_ERR_CONFIG', `missing ${p.signingKey}: run \`fedlora ca init\` for this data dir`);
  return { certPem: readFileSync(p.signingCert, 'utf8'), keyPem: readFileSync(p.signingKey, 'utf8') };
}
