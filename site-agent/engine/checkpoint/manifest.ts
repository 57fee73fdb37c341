// The model manifest: which files (config, tokenizer, weights) with which sizes and sha256s.
// Its own sha256 identifies a base model across sites: the coordinator and every site compare it.
//
// Hashing a 16 GB checkpoint takes a minute, so file hashes are cached by (absolute path, size,
// mtime) in memory and in a small cache folder under os.tmpdir() — never inside the model folder
// (it may be read-only, and it is shared by other tools).

import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fail } from '../../../shared/errors.ts';
import { sha256File, sha256FileSync } from '../../../shared/hash.ts';

export interface ManifestFile {
  file: string; // relative to the model folder
  size: number;
  sha256: string;
}

export interface ModelManifest {
  format: 'fedlora-model-manifest/1';
  files: ManifestFile[];
}

/** Tokenizer and config files that take part in the manifest when present. */
const MANIFEST_AUX_FILES = ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'tokenizer.model'];

const memCache = new Map<string, string>();

function cacheDir(): string {
  return process.env.FEDLORA_HASH_CACHE ?? join(tmpdir(), 'fedlora-hash-cache');
}

/** The cache key of a file (path, size, mtime), or a clear error when it cannot be read. */
function hashKey(path: string): { abs: string; key: string } {
  const abs = resolve(path);
  let st;
  try {
    st = statSync(abs);
  } catch (e) {
    throw fail('FEDLORA_ERR_MODEL_FILES', `${abs}: cannot stat (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  return { abs, key: `${abs}\0${st.size}\0${st.mtimeMs}` };
}

/** sha256 of a model file, cached by path+size+mtime. */
function cachedSha256(path: string): string {
  const { abs, key } = hashKey(path);
  const cached = cacheGet(key);
  if (cached) return cached;
  const digest = sha256FileSync(abs);
  cachePut(key, digest);
  return digest;
}

/** Same as cachedSha256 without blocking the event loop (for servers: coordinator, site agent). */
async function cachedSha256Async(path: string): Promise<string> {
  const { abs, key } = hashKey(path);
  const cached = cacheGet(key);
  if (cached) return cached;
  const digest = await sha256File(abs);
  cachePut(key, digest);
  return digest;
}

function diskCacheFile(key: string): string {
  return join(cacheDir(), `${createHash('sha256').update(key).digest('hex')}.json`);
}

function cacheGet(key: string): string | null {
  const mem = memCache.get(key);
  if (mem) return mem;
  try {
    const rec = JSON.parse(readFileSync(diskCacheFile(key), 'utf8'));
    if (rec && rec.key === key && typeof rec.sha256 === 'string' && /^[0-9a-f]{64}$/.test(rec.sha256)) {
      memCache.set(key, rec.sha256);
      return rec.sha256;
    }
  } catch {
    // no cache entry (or unreadable): the caller hashes the file.
  }
  return null;
}

function cachePut(key: string, digest: string): void {
  memCache.set(key, digest);
  try {
    mkdirSync(cacheDir(), { recursive: true });
    const file = diskCacheFile(key);
    const tmp = `${file}.tmp-${process.pid}`;
    writeFileSync(tmp, JSON.stringify({ key, sha256: digest }));
    renameSync(tmp, file);
  } catch {
    // The disk cache is an optimisation only.
  }
}

/** Files of a manifest: config, tokenizer files and weights (index + shards, or model.safetensors). */
export function manifestFileList(dir: string, weightFiles: string[]): string[] {
  const files = MANIFEST_AUX_FILES.filter((f) => existsSync(join(dir, f)));
  if (existsSync(join(dir, 'model.safetensors.index.json'))) files.push('model.safetensors.index.json');
  for (const w of weightFiles) if (!files.includes(w)) files.push(w);
  return files.sort();
}

/** Canonical JSON (sorted files, fixed key order) and its sha256. */
export function manifestDigest(m: ModelManifest): { json: string; sha256: string } {
  const json = JSON.stringify({ format: m.format, files: m.files.map((f) => ({ file: f.file, size: f.size, sha256: f.sha256 })) });
  return { json, sha256: createHash('sha256').update(json).digest('hex') };
}

export async function buildManifestAsync(dir: string, files: string[]): Promise<ModelManifest> {
  const out: ManifestFile[] = [];
  for (const f of [...files].sort()) {
    const p = join(dir, f);
    out.push({ file: f, size: statSync(p).size, sha256: await cachedSha256Async(p) });
  }
  return { format: 'fedlora-model-manifest/1', files: out };
}

export function buildManifest(dir: string, files: string[]): ModelManifest {
  return {
    format: 'fedlora-model-manifest/1',
    files: [...files].sort().map((f) => {
      const p = join(dir, f);
      return { file: f, size: statSync(p).size, sha256: cachedSha256(p) };
    }),
  };
}
