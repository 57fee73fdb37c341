// Publication manifests: what a version is, chained to the previous version by hash, signed by
// the coordinator's manifest key (ECDSA P-256, <dataDir>/pki/manifest-signing.crt/.key, a
// certificate issued by the consortium CA so a site can check it chains to its pinned CA).
// The manifest bytes are canonical JSON (sorted keys); the signature is DER ECDSA over
// SHA-256 of exactly those bytes, sent base64 in the DB/HTTP and raw in AdapterHeader.
import { createPublicKey, createSign, createVerify, X509Certificate } from 'node:crypto';
import { canonicalJson } from './audit.ts';
import { sha256Hex } from './hash.ts';

export interface PublicationManifest {
  schema: 1;
  job_id: string;
  round: number; // 0 for the initial version
  version: number;
  base_model: { id: string; manifest_sha256: string };
  contributing_sites: number;
  num_examples: number;
  strategy: string;
  adapter_sha256: string; // of adapter_model.safetensors
  adapter_size: number;
  adapter_config_sha256: string;
  prev_manifest_sha256: string | null; // null for version 0 (unless init_adapter: that version's manifest)
  created_at: string; // ISO time (the round's aggregation start, so a redo is identical)
  owner_site?: string; // set for a site's shared local-only adapter
  /** Version 0 of a job that continues a published version of an earlier job (its spec's
   *  init_adapter): the chain goes on from that version's manifest across jobs. */
  init_adapter?: InitAdapterRef;
}

export interface InitAdapterRef {
  job_id: string;
  version: number;
  manifest_sha256: string;
}

export function manifestBytes(m: PublicationManifest): Buffer {
  return Buffer.from(canonicalJson(m), 'utf8');
}

export function signManifest(bytes: Uint8Array, privateKeyPem: string): Buffer {
  const s = createSign('sha256');
  s.update(bytes);
  return s.sign(privateKeyPem);
}

/** Check a manifest signature with the coordinator's signing certificate or public key (PEM).
 *  `manifest` is the exact bytes/string received (not a re-serialised object). */
export function verifyManifest(manifest: Uint8Array | string, signature: Uint8Array | string, publicKeyPem: string | Buffer): boolean {
  const text = publicKeyPem.toString();
  let key;
  try {
    key = text.includes('BEGIN CERTIFICATE') ? new X509Certificate(text).publicKey : createPublicKey(text);
  } catch {
    return false;
  }
  const sig = typeof signature === 'string' ? Buffer.from(signature, 'base64') : Buffer.from(signature);
  const v = createVerify('sha256');
  v.update(typeof manifest === 'string' ? Buffer.from(manifest, 'utf8') : manifest);
  try {
    return v.verify(key, sig);
  } catch {
    return false;
  }
}

/** Verify a chain of manifests (version order): each signed, each pointing at its predecessor.
 *  A job continuing an earlier job's version verifies as one chain from the root job's v0
 *  (coordinator/publish/lineage.ts lineageChain): its v0 points at the version it continues. */
export function verifyManifestChain(items: { manifestJson: string; signature: string }[], publicKeyPem: string): { ok: true } | { ok: false; at: number; why: string } {
  let prev: string | null = null;
  for (let i = 0; i < items.length; i++) {
    const { manifestJson, signature } = items[i];
    if (!verifyManifest(manifestJson, signature, publicKeyPem)) return { ok: false, at: i, why: 'bad signature' };
    const m = JSON.parse(manifestJson) as PublicationManifest;
    if (m.prev_manifest_sha256 !== prev) return { ok: false, at: i, why: `prev_manifest_sha256 ${m.prev_manifest_sha256} != ${prev}` };
    prev = sha256Hex(manifestJson);
  }
  return { ok: true };
}
