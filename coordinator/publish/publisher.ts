// Writes a version of a job's adapter: content-addressed PEFT folder
//   <dataDir>/adapters/<sha256 of adapter_model.safetensors>/{adapter_model.safetensors, adapter_config.json}
// plus a signed manifest row in adapter_versions (and <dataDir>/manifests/<job>/<v>.json/.sig
// for operators). Files are written (atomically) before the row is committed, so a crash
// between the two leaves only an orphan folder, and re-publishing is idempotent.
// `writeVersion` does only the file half: the round engine commits the row in the SAME
// transaction that marks the round published (and writes the audit entry), so a version is
// never listed or served for a round that is not published yet, and a coordinator killed in
// between redoes the round and commits it once.
import { existsSync, mkdirSync, renameSync, writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeSafetensors } from '../../shared/safetensors.ts';
import { peftConfigJson } from '../../shared/lora/peft.ts';
import type { LoraTarget } from '../../shared/lora/types.ts';
import { unflatten, type AdapterLayout } from '../../shared/tensors.ts';
import type { CoordinatorStore, AdapterVersionRow } from '../store/store.ts';
import type { JobSpec } from '../jobs/spec.ts';
import { manifestBytes, signManifest, type InitAdapterRef, type PublicationManifest } from '../../shared/publication-manifest.ts';
import { sha256Hex } from '../../shared/hash.ts';

export interface Signer {
  keyPem: string;
  certPem: string;
}

/** PEFT adapter_config.json (the fields PEFT and vLLM read). */
function peftAdapterConfig(spec: JobSpec): Record<string, unknown> {
  // shared/lora/peft.ts's writer of PEFT's adapter_config.json (every field PEFT writes), so
  // site and coordinator produce the same file.
  return peftConfigJson({
    r: spec.lora.r, alpha: spec.lora.alpha, targets: spec.lora.target_modules as LoraTarget[], dropout: spec.lora.dropout,
    useRslora: spec.lora.use_rslora, baseModel: spec.base_model.id,
  });
}

function writeAtomic(file: string, data: Uint8Array | string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, data);
  renameSync(tmp, file);
}

export interface PublishInput {
  jobId: string;
  spec: JobSpec;
  version: number;
  round: number;
  flat: Float32Array;
  layout: AdapterLayout;
  contributingSites: number;
  numExamples: number;
  createdMs: number;
  ownerSite?: string;
  /** Version 0 of a job continuing this published version of an earlier job. */
  initAdapter?: InitAdapterRef;
}

/** Write a version's files (content-addressed adapter folder, signed manifest) and return the
 *  row to commit; `stored` = the row is already committed (a redo finds it done: nothing is
 *  rewritten and the committed row is returned). */
export function writeVersion(store: CoordinatorStore, dataDir: string, signer: Signer, p: PublishInput): { row: AdapterVersionRow; stored: boolean } {
  const owner = p.ownerSite ?? '';
  const existing = store.adapterVersion(p.jobId, p.version, owner);
  if (existing) return { row: existing, stored: true }; // idempotent: a redo after a crash finds it done
  const tensors = new Map([...unflatten(p.flat, p.layout)].map(([k, t]) => [k, { dtype: 'F32' as const, shape: t.shape, data: t.data }]));
  const bytes = encodeSafetensors(tensors, { format: 'pt' });
  const sha = sha256Hex(bytes);
  const configJson = JSON.stringify(peftAdapterConfig(p.spec), null, 2) + '\n';
  const dir = join(dataDir, 'adapters', sha);
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 'adapter_model.safetensors');
  if (!existsSync(file)) writeAtomic(file, bytes);
  writeAtomic(join(dir, 'adapter_config.json'), configJson);
  const prev = owner ? undefined : p.version > 0 ? store.adapterVersion(p.jobId, p.version - 1) : undefined;
  const manifest: PublicationManifest = {
    schema: 1,
    job_id: p.jobId,
    round: p.round,
    version: p.version,
    base_model: { id: p.spec.base_model.id, manifest_sha256: p.spec.base_model.manifest_sha256 },
    contributing_sites: p.contributingSites,
    num_examples: p.numExamples,
    strategy: p.spec.aggregation.name,
    adapter_sha256: sha,
    adapter_size: bytes.length,
    adapter_config_sha256: sha256Hex(configJson),
    prev_manifest_sha256: p.initAdapter && p.version === 0 ? p.initAdapter.manifest_sha256 : prev ? prev.manifest_sha256 : null,
    created_at: new Date(p.createdMs).toISOString(),
    ...(owner ? { owner_site: owner } : {}),
    ...(p.initAdapter && p.version === 0 ? { init_adapter: p.initAdapter } : {}),
  };
  const mBytes = manifestBytes(manifest);
  const sig = signManifest(mBytes, signer.keyPem).toString('base64');
  const mdir = join(dataDir, 'manifests', p.jobId);
  mkdirSync(mdir, { recursive: true });
  const base = owner ? `${owner}-${p.version}` : String(p.version);
  writeAtomic(join(mdir, `${base}.json`), mBytes);
  writeAtomic(join(mdir, `${base}.sig`), sig);
  const row: AdapterVersionRow = {
    job_id: p.jobId, version: p.version, owner_site: owner, round: p.round, sha256: sha, size: bytes.length,
    manifest_json: mBytes.toString('utf8'), manifest_sha256: sha256Hex(mBytes), signature: sig, path: dir, created_ms: p.createdMs,
  };
  return { row, stored: false };
}

/** writeVersion, then commit the row (idempotent). */
export function publishVersion(store: CoordinatorStore, dataDir: string, signer: Signer, p: PublishInput): AdapterVersionRow {
  const { row, stored } = writeVersion(store, dataDir, signer, p);
  if (!stored) store.insertAdapterVersion(row);
  return row;
}

export function adapterFiles(row: AdapterVersionRow): { model: string; config: string } {
  return { model: join(row.path, 'adapter_model.safetensors'), config: join(row.path, 'adapter_config.json') };
}

export function readAdapterConfig(row: AdapterVersionRow): Buffer {
  return readFileSync(adapterFiles(row).config);
}
