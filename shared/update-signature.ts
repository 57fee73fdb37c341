// What a site signs when it submits an update, and how the coordinator checks it.
// The signature binds the payload hash to the job, round, base version and update id, so a
// captured update cannot be replayed into another round or presented as another update.

import { createSign, createVerify, X509Certificate, createPublicKey } from 'node:crypto';
import { canonicalJson } from './audit.ts';

export interface SignedUpdateFields {
  updateId: string;
  jobId: string;
  round: number;
  baseVersion: number;
  sha256: string;
  numExamples: number;
}

function updateSigningBytes(f: SignedUpdateFields): Buffer {
  return Buffer.from(
    canonicalJson({ v: 1, update_id: f.updateId, job_id: f.jobId, round: f.round, base_version: f.baseVersion, sha256: f.sha256, num_examples: f.numExamples }),
    'utf8',
  );
}

/** Sign with the site's private key (PEM, ECDSA P-256 or RSA): DER signature over SHA-256. */
export function signUpdate(privateKeyPem: string | Buffer, f: SignedUpdateFields): Buffer {
  const s = createSign('sha256');
  s.update(updateSigningBytes(f));
  return s.sign(privateKeyPem);
}

/** Verify with the site's certificate (PEM) or public key (PEM). */
export function verifyUpdateSignature(certOrKeyPem: string | Buffer, f: SignedUpdateFields, signature: Uint8Array): boolean {
  const text = certOrKeyPem.toString();
  const key = text.includes('BEGIN CERTIFICATE') ? new X509Certificate(text).publicKey : createPublicKey(text);
  const v = createVerify('sha256');
  v.update(updateSigningBytes(f));
  try {
    return v.verify(key, Buffer.from(signature));
  } catch {
    return false;
  }
}
