// `fedlora doctor --site-dir DIR`: is this hospital's site agent able to take part?
// config → certificate → coordinator reachable with it → clock → model files and hash →
// execution providers → site store → disk. Each check says what to fix.
import { accessSync, constants as fsConstants, existsSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createHash, X509Certificate } from 'node:crypto';
import { sitePaths } from '../../shared/tls.ts';
import { isFedloraError } from '../../shared/errors.ts';
import { loadSiteConfig, type SiteConfig } from '../../site-agent/config.ts';
import { openSiteDb, siteDbSpec } from '../../site-agent/site-db.ts';
import { describeKeySource } from '../../shared/db-key.ts';
import { diagnoseSiteCredentials, type EnrollmentRecord } from '../../site-agent/enroll.ts';
import { computeModelManifestAsync } from '../../site-agent/engine/index.ts';
import { checkCertificateFile, checkClockSkew, checkDisk, checkExecutionProviders, probeTls } from './probes.ts';
import { report, type CheckResult, type CommonDoctorOptions, type DoctorReport } from './types.ts';

const GiB = 1024 ** 3;

export interface SiteDoctorOptions extends CommonDoctorOptions {
  siteDir: string;
  /** The coordinator's HTTP API (clock check, running jobs' base model hash). */
  coordinatorUrl?: string;
  /** Expected base-model manifest sha256 (else taken from the coordinator's running jobs). */
  modelSha256?: string;
  /** Do not hash the model files (a 16 GB checkpoint takes a minute the first time). */
  skipModelHash?: boolean;
  /** The engine's ONNX graph cache (default: $FEDLORA_GRAPH_CACHE or <tmpdir>/fedlora-graphs, as the engine). */
  graphCacheDir?: string;
}

/** The nearest existing ancestor of a path (the cache folder may not exist yet). */
function existingAncestor(p: string): string {
  let cur = resolve(p);
  while (!existsSync(cur) && dirname(cur) !== cur) cur = dirname(cur);
  return cur;
}

/**
 * The engine hard-links the weight files into the graph cache (ONNX external data must sit
 * next to the graph); across file systems it falls back to writing graphs into the model
 * folder, and fails if that is read-only. Check which case this site is in.
 */
function checkGraphCache(modelDir: string, cacheDir: string): CheckResult {
  if (!existsSync(modelDir)) return { name: 'graph-cache', status: 'SKIP', detail: `model folder ${modelDir} missing` };
  const anc = existingAncestor(cacheDir);
  if (statSync(anc).dev === statSync(modelDir).dev) return { name: 'graph-cache', status: 'OK', detail: `${cacheDir} is on the model's file system (weights are hard-linked, not copied)` };
  let writable = true;
  try {
    accessSync(modelDir, fsConstants.W_OK);
  } catch {
    writable = false;
  }
  const fix = `set FEDLORA_GRAPH_CACHE to a folder on the same file system as ${modelDir} (e.g. a sibling folder)`;
  if (writable) return { name: 'graph-cache', status: 'WARN', detail: `${cacheDir} is on another file system than ${modelDir}: graphs will be written into the model folder`, fix };
  return { name: 'graph-cache', status: 'FAIL', detail: `${cacheDir} is on another file system than ${modelDir}, which is read-only: training cannot build its graphs`, fix };
}

const errText = (e: unknown) => (isFedloraError(e) ? `${e.code}: ${e.message}` : (e as Error).message);

interface JobView { id: string; status: string; spec?: { base_model?: { id?: string; manifest_sha256?: string } } }

/** The coordinator's running jobs; the API needs a token (any role): $FEDLORA_TOKEN. */
async function runningJobs(url: string, timeoutMs: number): Promise<JobView[] | string> {
  const token = process.env.FEDLORA_TOKEN;
  try {
    const res = await fetch(`${url.replace(/\/+$/, '')}/api/jobs`, { signal: AbortSignal.timeout(timeoutMs), headers: token ? { authorization: `Bearer ${token}` } : {} });
    if (res.status === 401 || res.status === 403) return `GET /api/jobs: HTTP ${res.status}: set FEDLORA_TOKEN to a token from the coordinator operator (role observer is enough)`;
    if (!res.ok) return `GET /api/jobs: HTTP ${res.status}`;
    const body = (await res.json()) as { jobs?: JobView[] };
    return (body.jobs ?? []).filter((j) => j.status === 'running' || j.status === 'pending');
  } catch (e) {
    return `GET /api/jobs: ${(e as Error).message}`;
  }
}

async function checkModel(cfg: SiteConfig, o: SiteDoctorOptions, timeoutMs: number): Promise<CheckResult> {
  const dir = cfg.model.path;
  if (!existsSync(dir)) return { name: 'model', status: 'FAIL', detail: `model.path ${dir} does not exist`, fix: 'copy the Hugging Face model folder there (config.json, *.safetensors, tokenizer files) or fix model.path in site.yaml' };
  if (o.skipModelHash) return { name: 'model', status: 'SKIP', detail: `${dir}: hashing skipped (--skip-model-hash)` };
  let sha: string, n: number, bytes: number;
  try {
    const m = await computeModelManifestAsync(dir);
    sha = m.sha256;
    n = m.manifest.files.length;
    bytes = m.manifest.files.reduce((a, f) => a + f.size, 0);
  } catch (e) {
    return { name: 'model', status: 'FAIL', detail: errText(e), fix: 'the model folder is incomplete: copy it again from the source (all *.safetensors shards, config.json, tokenizer files)' };
  }
  const detail = `${dir}: ${n} files, ${(bytes / GiB).toFixed(2)} GiB, manifest sha256 ${sha}`;
  const mismatchFix = 'the local copy differs from the job\'s base model: copy the exact revision the consortium uses (`fedlora doctor` prints the local manifest sha256; the job spec holds base_model.manifest_sha256)';
  if (o.modelSha256) {
    if (o.modelSha256 !== sha) return { name: 'model', status: 'FAIL', detail: `${detail}; expected ${o.modelSha256}`, fix: mismatchFix };
    return { name: 'model', status: 'OK', detail: `${detail} (matches the expected hash)` };
  }
  if (o.coordinatorUrl) {
    const jobs = await runningJobs(o.coordinatorUrl, timeoutMs);
    if (typeof jobs === 'string') return { name: 'model', status: 'WARN', detail: `${detail}; could not compare with the jobs (${jobs})`, fix: 'pass --model-sha256 HEX from the job spec' };
    const withHash = jobs.filter((j) => j.spec?.base_model?.manifest_sha256);
    if (!withHash.length) return { name: 'model', status: 'OK', detail: `${detail}; no running job to compare with` };
    const match = withHash.filter((j) => j.spec!.base_model!.manifest_sha256 === sha);
    if (!match.length) {
      return { name: 'model', status: 'FAIL', detail: `${detail}; running job(s) expect ${withHash.map((j) => `${j.id}: ${j.spec!.base_model!.manifest_sha256}`).join(', ')}`, fix: mismatchFix };
    }
    const other = withHash.filter((j) => !match.includes(j));
    return {
      name: 'model', status: other.length ? 'WARN' : 'OK',
      detail: `${detail}; matches job(s) ${match.map((j) => j.id).join(', ')}${other.length ? `; not job(s) ${other.map((j) => j.id).join(', ')} (their tasks will be declined)` : ''}`,
    };
  }
  return { name: 'model', status: 'OK', detail: `${detail} (not compared: pass --model-sha256 or --coordinator-url)` };
}

function checkStore(siteDir: string): CheckResult {
  const file = `${siteDir.replace(/\/+$/, '')}/site.sqlite`;
  if (!existsSync(file)) return { name: 'site-store', status: 'WARN', detail: `${file} does not exist: no records ingested yet`, fix: `run \`fedlora site ingest --site-dir ${siteDir} --format csv|jsonl|fhir FILES\`` };
  let atRest: string;
  try {
    const spec = siteDbSpec(siteDir);
    atRest = spec.source ? `encrypted (SQLCipher, ${describeKeySource(spec.source)})` : 'NOT encrypted (database.encryption: none)';
    const db = openSiteDb(siteDir, { readonly: true });
    try {
      const r = db.pragma('quick_check', { simple: true });
      if (r !== 'ok') return { name: 'site-store', status: 'FAIL', detail: `${file}: quick_check says ${String(r)}`, fix: 'restore the site store from the last backup (`fedlora site restore`, deploy/README.md "Backup and restore")' };
    } finally {
      db.close();
    }
  } catch (e) {
    const fix = isFedloraError(e) && e.code === 'FEDLORA_ERR_DB_PLAINTEXT' ? `stop the agent and the assistant, then \`fedlora site rekey --site-dir ${siteDir}\``
      : isFedloraError(e) && e.code === 'FEDLORA_ERR_DB_KEY' ? 'restore the key the database was encrypted with (database.key_file / key_env / key_command in site.yaml)'
        : 'check the file permissions (the agent user must own the site dir) or restore from backup';
    return { name: 'site-store', status: 'FAIL', detail: isFedloraError(e) ? e.message : `${file}: ${(e as Error).message}`, fix };
  }
  return { name: 'site-store', status: atRest.startsWith('NOT') ? 'WARN' : 'OK', detail: `${file}: integrity quick_check ok; ${atRest}` };
}

export async function runSiteDoctor(o: SiteDoctorOptions): Promise<DoctorReport> {
  const siteDir = resolve(o.siteDir);
  const now = o.now ?? Date.now();
  const timeoutMs = o.timeoutMs ?? 5000;
  const checks: CheckResult[] = [];
  const p = sitePaths(siteDir);
  const coordinatorUrl = o.coordinatorUrl;

  // 1. config
  let cfg: SiteConfig | undefined;
  try {
    cfg = loadSiteConfig(siteDir);
    checks.push({ name: 'config', status: 'OK', detail: `site config valid (model.path ${cfg.model.path}, device ${cfg.model.device})` });
  } catch (e) {
    checks.push({ name: 'config', status: 'FAIL', detail: errText(e), fix: 'write site.yaml as in deploy/README.md ("site.yaml")' });
  }

  // 2. certificate (chain to the pinned CA, key matches, expiry) and the enrollment record
  const renew = `ask the coordinator operator for a join token (\`fedlora site invite\`) and run \`fedlora site enroll --site-dir ${siteDir} --token TOKEN --force\``;
  let enrollment: EnrollmentRecord | undefined;
  const caPem = existsSync(p.ca) ? readFileSync(p.ca, 'utf8') : undefined;
  if (!caPem) checks.push({ name: 'certificate', status: 'FAIL', detail: `${p.ca} missing: this site is not enrolled`, fix: renew });
  else {
    const c = checkCertificateFile('certificate', p.cert, { keyFile: p.key, caPem, now, warnDays: o.certWarnDays ?? 14, renew });
    if (c.status === 'OK' || c.status === 'WARN') {
      try {
        const { siteId } = await diagnoseSiteCredentials(siteDir, now);
        c.detail = `site ${siteId}: ${c.detail}`;
      } catch (e) {
        c.status = 'FAIL';
        c.detail = errText(e);
        c.fix = renew;
      }
    }
    checks.push(c);
    try {
      enrollment = JSON.parse(readFileSync(p.enrollment, 'utf8')) as EnrollmentRecord;
      if (enrollment.caSha256) {
        const got = createHash('sha256').update(new X509Certificate(caPem).raw).digest('hex');
        if (got !== enrollment.caSha256) checks.push({ name: 'pinned-ca', status: 'FAIL', detail: `${p.ca} has sha256 ${got}, the join token pinned ${enrollment.caSha256}`, fix: renew });
      }
    } catch (e) {
      checks.push({ name: 'enrollment', status: 'FAIL', detail: `${p.enrollment}: ${(e as Error).message}`, fix: renew });
    }
  }
  const certOk = checks.find((c) => c.name === 'certificate')?.status !== 'FAIL';

  // 3. reachability of the Federation endpoint with the site certificate
  if (!enrollment?.federationEndpoint) checks.push({ name: 'reachability', status: 'SKIP', detail: 'no federation endpoint known (not enrolled)' });
  else if (!certOk || !caPem) checks.push({ name: 'reachability', status: 'SKIP', detail: `${enrollment.federationEndpoint}: not probed (fix the certificate first)` });
  else {
    checks.push(await probeTls(enrollment.federationEndpoint, {
      name: 'reachability', caPem, keyPem: readFileSync(p.key), certPem: readFileSync(p.cert), timeoutMs,
    }));
  }

  // 4. clock skew against the coordinator's HTTP Date header
  if (coordinatorUrl) checks.push(await checkClockSkew(`${coordinatorUrl.replace(/\/+$/, '')}/healthz`, { timeoutMs }));
  else checks.push({ name: 'clock', status: 'SKIP', detail: 'coordinator HTTP URL unknown', fix: 'pass --coordinator-url URL (or set FEDLORA_COORDINATOR_URL) to compare clocks' });

  // 5. model files and their hash; 6. execution providers
  if (cfg) {
    checks.push(await checkModel(cfg, o, timeoutMs));
    if (cfg.trainer.kind === 'engine') checks.push(checkGraphCache(cfg.model.path, o.graphCacheDir ?? process.env.FEDLORA_GRAPH_CACHE ?? join(tmpdir(), 'fedlora-graphs')));
    checks.push(await checkExecutionProviders(cfg.trainer.kind === 'engine' ? cfg.model.device : undefined));
  } else {
    checks.push({ name: 'model', status: 'SKIP', detail: 'no valid site config' });
    checks.push(await checkExecutionProviders(undefined));
  }

  // 7. site store; 8. disk (graphs and adapters are written under the site dir / graph cache)
  if (existsSync(siteDir)) {
    checks.push(checkStore(siteDir));
    checks.push(checkDisk(siteDir, { minFreeBytes: o.minFreeBytes ?? GiB / 2, warnFreeBytes: o.warnFreeBytes ?? 5 * GiB, what: 'ONNX graphs, adapters and the site store are written there' }));
  } else checks.push({ name: 'site-dir', status: 'FAIL', detail: `${siteDir} does not exist`, fix: 'create it and enroll (`fedlora site enroll`)' });
  return report('site', siteDir, checks);
}
