// Low-level X.509 helpers shared by the CA (coordinator) and the site (CSR, key files).
// Everything runs on Node's webcrypto through @peculiar/x509; keys are stored as PKCS#8 PEM
// (what Node's tls module reads) and certificates as PEM.
import { webcrypto, createHash, createPrivateKey, randomBytes, X509Certificate as NodeX509 } from 'node:crypto';
import { chmodSync, renameSync, writeFileSync, openSync, fsyncSync, closeSync } from 'node:fs';
import './reflect-polyfill.ts';
import * as x509 from '@peculiar/x509';
import { fail } from '../shared/errors.ts';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);
export { x509 };

/** Copy a Buffer into a plain ArrayBuffer-backed view (what @peculiar/x509's types want). */
export function u8(b: Buffer | Uint8Array): Uint8Array<ArrayBuffer> {
  return new Uint8Array(b);
}

export type KeyAlgorithm = 'ecdsa-p256' | 'rsa-3072';

/** Site ids are also DNS-label-like so they fit in a SPIFFE URI and in file names. */
const SITE_ID_RE = /^[a-z0-9][a-z0-9_-]{0,62}$/;
export const SPIFFE_PREFIX = 'spiffe://fedlora/site/';

export function assertSiteId(siteId: string, where: string): void {
  if (!SITE_ID_RE.test(siteId)) {
    throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `${where}: site id ${JSON.stringify(siteId)} must match ${SITE_ID_RE} (lowercase letters, digits, - and _)`);
  }
}

function keyGenParams(alg: KeyAlgorithm): RsaHashedKeyGenParams | EcKeyGenParams {
  return alg === 'rsa-3072'
    ? { name: 'RSASSA-PKCS1-v1_5', modulusLength: 3072, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' }
    : { name: 'ECDSA', namedCurve: 'P-256' };
}

export function signingAlgorithm(alg: KeyAlgorithm): Algorithm | EcdsaParams {
  return alg === 'rsa-3072' ? { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } as Algorithm : ({ name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams);
}

export async function generateKeyPair(alg: KeyAlgorithm): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(keyGenParams(alg) as EcKeyGenParams, true, ['sign', 'verify'])) as unknown as CryptoKeyPair;
}

export async function exportPrivateKeyPem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key as webcrypto.CryptoKey));
  return x509.PemConverter.encode(der, 'PRIVATE KEY');
}

/** Import a PKCS#8 PEM private key for signing; the algorithm is read from the key itself. */
export async function importPrivateKeyPem(pem: string): Promise<{ key: CryptoKey; alg: KeyAlgorithm }> {
  const k = createPrivateKey(pem);
  let alg: KeyAlgorithm;
  if (k.asymmetricKeyType === 'ec' && k.asymmetricKeyDetails?.namedCurve === 'prime256v1') alg = 'ecdsa-p256';
  else if (k.asymmetricKeyType === 'rsa') alg = 'rsa-3072';
  else throw fail('FEDLORA_ERR_CONFIG', `unsupported private key type ${k.asymmetricKeyType}/${k.asymmetricKeyDetails?.namedCurve ?? ''} (expected EC P-256 or RSA)`);
  const der = k.export({ type: 'pkcs8', format: 'der' });
  const key = await webcrypto.subtle.importKey('pkcs8', der, keyGenParams(alg) as EcKeyImportParams, false, ['sign']);
  return { key: key as unknown as CryptoKey, alg };
}

/** Positive, non-zero-leading 128-bit serial in lowercase hex (the form stored in SQLite). */
export function randomSerial(): string {
  const b = randomBytes(16);
  b[0] = (b[0] & 0x7f) | 0x10;
  return b.toString('hex');
}

/** Serials compare as lowercase hex without leading zeros (Node prints uppercase, x509 may pad). */
export function normalizeSerial(s: string): string {
  const t = s.replace(/[:\s]/g, '').toLowerCase().replace(/^0+/, '');
  return t === '' ? '0' : t;
}

/** sha256 of the certificate DER, lowercase hex without colons: the pinned CA fingerprint. */
export function certSha256(pem: string | Buffer): string {
  return createHash('sha256').update(new NodeX509(pem).raw).digest('hex');
}

export function derSha256(der: Buffer): string {
  return createHash('sha256').update(der).digest('hex');
}

/** Write a file atomically with a mode (tmp + fsync + rename), so a crash never leaves half a key. */
export function writeFileAtomic(path: string, data: string | Buffer, mode: number): void {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  writeFileSync(tmp, data, { mode });
  chmodSync(tmp, mode); // umask may have cleared bits
  const fd = openSync(tmp, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

/** Create a PKCS#10 CSR with subject CN = commonName, signed by the given key pair. */
export async function createCsrPem(keys: CryptoKeyPair, commonName: string): Promise<string> {
  const alg: KeyAlgorithm = keys.privateKey.algorithm.name === 'ECDSA' ? 'ecdsa-p256' : 'rsa-3072';
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${commonName}`,
    keys,
    signingAlgorithm: signingAlgorithm(alg),
  });
  return csr.toString('pem');
}

/** The CN of a distinguished name (first one), or undefined. */
export function commonNameOf(name: x509.Name | string): string | undefined {
  const n = typeof name === 'string' ? new x509.Name(name) : name;
  const cn = n.getField('CN');
  return cn.length > 0 ? cn[0] : undefined;
}

/** Site id from a site certificate: SAN URI spiffe://fedlora/site/<id>, which must agree with the CN. */
export function siteIdOfCertificate(cert: x509.X509Certificate): string | undefined {
  const cn = commonNameOf(cert.subjectName);
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  const uris = san ? san.names.items.filter((g) => g.type === 'url').map((g) => g.value) : [];
  const spiffe = uris.find((u) => u.startsWith(SPIFFE_PREFIX));
  if (!spiffe) return undefined;
  const id = spiffe.slice(SPIFFE_PREFIX.length);
  if (cn !== undefined && cn !== id) return undefined;
  return SITE_ID_RE.test(id) ? id : undefined;
}
