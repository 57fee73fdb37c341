// A small HTTP client for the coordinator API (the CLI's job/adapter commands and the demo).
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ERRORS, FedloraError, fail, type ErrorCode } from '../../shared/errors.ts';
import { verifyManifest } from '../../shared/publication-manifest.ts';

export interface ApiTarget {
  url: string;
  token?: string;
}

/** --url / FEDLORA_COORDINATOR_URL / the data dir's config; token (every API route needs one)
 *  from --token, FEDLORA_TOKEN, FEDLORA_ADMIN_TOKEN or <dataDir>/admin.token. */
export function resolveTarget(o: { url?: string; token?: string; dataDir?: string }): ApiTarget {
  let url = o.url ?? process.env.FEDLORA_COORDINATOR_URL;
  let token = o.token || process.env.FEDLORA_TOKEN || process.env.FEDLORA_ADMIN_TOKEN || undefined;
  if (o.dataDir) {
    const tf = join(o.dataDir, 'admin.token');
    if (!token && existsSync(tf)) token = readFileSync(tf, 'utf8').trim();
    const cf = join(o.dataDir, 'coordinator.yaml');
    if (!url && existsSync(cf)) {
      const m = /^http:\s*\n(?:\s+.*\n)*?\s+port:\s*(\d+)/m.exec(readFileSync(cf, 'utf8'));
      if (m && m[1] !== '0') url = `http://127.0.0.1:${m[1]}`;
    }
  }
  return { url: (url ?? 'http://127.0.0.1:8080').replace(/\/$/, ''), token };
}

export async function api<T = unknown>(t: ApiTarget, method: string, path: string, body?: unknown): Promise<T> {
  let res: Response;
  try {
    res = await fetch(`${t.url}${path}`, {
      method,
      headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...(t.token ? { authorization: `Bearer ${t.token}` } : {}) },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
  } catch (e) {
    throw fail('FEDLORA_ERR_UNAVAILABLE', `cannot reach the coordinator at ${t.url}: ${(e as Error).message}`);
  }
  const text = await res.text();
  if (!res.ok) throw apiError(method, path, res.status, text);
  return (res.headers.get('content-type') ?? '').includes('json') ? (JSON.parse(text) as T) : (text as T);
}

/** The coordinator's {error: {code, message}} as a FedloraError (a 401/403 keeps its code). */
function apiError(method: string, path: string, status: number, text: string): FedloraError {
  let code: ErrorCode = status === 404 ? 'FEDLORA_ERR_NOT_FOUND' : 'FEDLORA_ERR_UNAVAILABLE';
  let message = `${method} ${path}: HTTP ${status} ${text.slice(0, 300)}`;
  try {
    const j = JSON.parse(text) as { error?: { code?: string; message?: string } };
    if (j.error?.code && j.error.code in ERRORS) {
      code = j.error.code as ErrorCode;
      message = j.error.message ?? message;
    }
  } catch { /* not JSON */ }
  return new FedloraError(code, message);
}

async function download(t: ApiTarget, path: string): Promise<Buffer> {
  let res: Response;
  try {
    res = await fetch(`${t.url}${path}`, { headers: t.token ? { authorization: `Bearer ${t.token}` } : {} });
  } catch (e) {
    throw fail('FEDLORA_ERR_UNAVAILABLE', `cannot reach the coordinator at ${t.url}: ${(e as Error).message}`);
  }
  if (!res.ok) throw apiError('GET', path, res.status, await res.text());
  return Buffer.from(await res.arrayBuffer());
}

/** Download a version's PEFT folder + manifest into outDir, checking the adapter's sha256
 *  against the signed manifest and the signature against the coordinator's manifest key. */
export async function downloadAdapter(t: ApiTarget, jobId: string, version: number, outDir: string): Promise<{ sha256: string; files: string[] }> {
  const base = `/api/jobs/${encodeURIComponent(jobId)}/adapters/${version}`;
  const [model, config, manifest, sig, key] = await Promise.all([
    download(t, `${base}/adapter_model.safetensors`), download(t, `${base}/adapter_config.json`), download(t, `${base}/manifest.json`),
    download(t, `${base}/manifest.sig`), download(t, '/api/manifest-key'),
  ]);
  if (!verifyManifest(manifest, sig.toString('utf8'), key)) throw fail('FEDLORA_ERR_SIGNATURE', `job ${jobId} version ${version}: manifest signature does not verify`);
  const m = JSON.parse(manifest.toString('utf8')) as { adapter_sha256: string };
  const sha = createHash('sha256').update(model).digest('hex');
  if (sha !== m.adapter_sha256) throw fail('FEDLORA_ERR_UPDATE_HASH', `job ${jobId} version ${version}: adapter sha256 ${sha} != manifest ${m.adapter_sha256}`);
  mkdirSync(outDir, { recursive: true });
  const files: string[] = [];
  for (const [name, data] of [['adapter_model.safetensors', model], ['adapter_config.json', config], ['manifest.json', manifest], ['manifest.sig', sig]] as const) {
    const f = join(outDir, name);
    writeFileSync(`${f}.tmp`, data);
    renameSync(`${f}.tmp`, f);
    files.push(f);
  }
  return { sha256: sha, files };
}
