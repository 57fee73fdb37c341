// `fedlora doctor --data-dir DIR`: the coordinator operator's checks. config → CA, server and
// manifest-signing certificates → server certificate names cover the public endpoint → store
// integrity → is it running (HTTP health, TLS handshake on the enrollment listener) → disk.
import { existsSync, readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { resolve } from 'node:path';
import { isFedloraError } from '../../shared/errors.ts';
import { caPaths } from '../../certs/ca.ts';
import { loadCoordinatorConfig, type CoordinatorConfig } from '../../coordinator/config.ts';
import { pkiDirOf, sqlitePathOf } from '../../coordinator/enrollment.ts';
import { openCoordinatorDb } from '../../coordinator/store/migrations.ts';
import { checkCertificateFile, checkDisk, probeTls, splitEndpoint } from './probes.ts';
import { report, type CheckResult, type CommonDoctorOptions, type DoctorReport } from './types.ts';

const GiB = 1024 ** 3;
const dial = (h: string) => (h === '0.0.0.0' || h === '::' ? '127.0.0.1' : h);

export interface CoordinatorDoctorOptions extends CommonDoctorOptions {
  dataDir: string;
}

/** Names (DNS + IP) in a certificate's subjectAltName. */
function sanNames(cert: X509Certificate): string[] {
  return (cert.subjectAltName ?? '').split(/,\s*/).map((s) => s.replace(/^(DNS|IP Address):/, '')).filter(Boolean);
}

function checkStore(dataDir: string): CheckResult {
  const file = sqlitePathOf(dataDir);
  if (!existsSync(file)) return { name: 'store', status: 'FAIL', detail: `${file} missing`, fix: `run \`fedlora coordinator init --data-dir ${dataDir}\` or restore the backup` };
  try {
    const db = openCoordinatorDb(file, { readonly: true });
    try {
      const r = db.pragma('quick_check', { simple: true });
      if (r !== 'ok') return { name: 'store', status: 'FAIL', detail: `${file}: quick_check says ${String(r)}`, fix: 'stop the coordinator and restore coordinator.sqlite from the last backup' };
      const jobs = (db.prepare("SELECT count(*) AS n FROM sqlite_master WHERE type='table' AND name='jobs'").get() as { n: number }).n
        ? (db.prepare("SELECT count(*) AS n FROM jobs WHERE status = 'running'").get() as { n: number }).n : 0;
      return { name: 'store', status: 'OK', detail: `${file}: integrity quick_check ok; ${jobs} running job(s)` };
    } finally {
      db.close();
    }
  } catch (e) {
    return { name: 'store', status: 'FAIL', detail: isFedloraError(e) ? e.message : `${file}: ${(e as Error).message}`, fix: isFedloraError(e) && e.code.startsWith('FEDLORA_ERR_DB_') ? 'see the database section of coordinator.yaml (deploy/README.md, "Encryption at rest")' : 'check that the fedlora user owns the data dir' };
  }
}

async function checkRunning(cfg: CoordinatorConfig, caPem: string | undefined, timeoutMs: number): Promise<CheckResult[]> {
  const url = `http://${dial(cfg.http.host)}:${cfg.http.port}/healthz`; // the liveness route needs no token
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    const body = (await res.json()) as { status?: string };
    if (!res.ok || body.status !== 'ok') return [{ name: 'service', status: 'FAIL', detail: `${url}: HTTP ${res.status} ${JSON.stringify(body)}`, fix: 'read the coordinator log (journalctl -u fedlora-coordinator)' }];
  } catch (e) {
    return [{ name: 'service', status: 'WARN', detail: `${url}: not answering (${(e as Error).message})`, fix: `start it: \`fedlora coordinator start --data-dir ${cfg.dataDir}\` (or systemctl start fedlora-coordinator)` }];
  }
  const out: CheckResult[] = [{ name: 'service', status: 'OK', detail: `${url} answers` }];
  if (caPem) {
    // The enrollment listener is server-TLS only: a handshake verified against our CA as
    // "localhost" proves the listener runs with this data dir's certificate.
    out.push(await probeTls(`${dial(cfg.enrollment.host)}:${cfg.enrollment.port}`, { name: 'enrollment-listener', caPem, timeoutMs, serverName: 'localhost' }));
  }
  return out;
}

export async function runCoordinatorDoctor(o: CoordinatorDoctorOptions): Promise<DoctorReport> {
  const dataDir = resolve(o.dataDir);
  const now = o.now ?? Date.now();
  const timeoutMs = o.timeoutMs ?? 5000;
  const warnDays = o.certWarnDays ?? 14;
  const checks: CheckResult[] = [];
  let cfg: CoordinatorConfig | undefined;
  try {
    cfg = loadCoordinatorConfig(dataDir);
    checks.push({ name: 'config', status: 'OK', detail: `coordinator.yaml valid (federation :${cfg.federation.port}, enrollment :${cfg.enrollment.port}, http ${cfg.http.host}:${cfg.http.port})` });
    if (!cfg.admin_tokens.length) checks.push({ name: 'admin-tokens', status: 'WARN', detail: 'no admin token in coordinator.yaml: jobs cannot be submitted', fix: 'add {name, sha256} to admin_tokens' });
  } catch (e) {
    checks.push({ name: 'config', status: 'FAIL', detail: isFedloraError(e) ? `${e.code}: ${e.message}` : (e as Error).message, fix: `run \`fedlora coordinator init --data-dir ${dataDir}\` or fix the field named` });
  }

  const p = caPaths(pkiDirOf(dataDir));
  const reinit = `re-issue with \`fedlora ca init --data-dir ${dataDir} --force\` (every site must enroll again)`;
  const caCheck = checkCertificateFile('ca', p.cert, { keyFile: p.key, now, warnDays: Math.max(warnDays, 90), renew: reinit });
  checks.push(caCheck);
  const caPem = caCheck.status !== 'FAIL' ? readFileSync(p.cert, 'utf8') : undefined;
  if (caPem) {
    const server = checkCertificateFile('server-certificate', p.serverCert, { keyFile: p.serverKey, caPem, now, warnDays, renew: reinit });
    checks.push(server);
    if (server.status !== 'FAIL' && cfg?.federation.public_endpoint) {
      const host = splitEndpoint(cfg.federation.public_endpoint)?.host ?? '';
      const names = sanNames(new X509Certificate(readFileSync(p.serverCert)));
      if (!names.includes(host)) {
        checks.push({
          name: 'server-names', status: 'FAIL',
          detail: `federation.public_endpoint ${cfg.federation.public_endpoint}: ${host} is not in the server certificate (${names.join(', ')}); sites will refuse the TLS handshake`,
          fix: `re-initialise with \`--san ${host}\`${isIP(host) ? '' : ' (the DNS name sites dial)'}`,
        });
      } else checks.push({ name: 'server-names', status: 'OK', detail: `server certificate names ${names.join(', ')} include ${host}` });
    }
    checks.push(checkCertificateFile('manifest-signing', p.signingCert, { keyFile: p.signingKey, caPem, now, warnDays, renew: reinit }));
  }
  checks.push(checkStore(dataDir));
  if (cfg) checks.push(...await checkRunning(cfg, caPem, timeoutMs));
  if (existsSync(dataDir)) checks.push(checkDisk(dataDir, { minFreeBytes: o.minFreeBytes ?? GiB, warnFreeBytes: o.warnFreeBytes ?? 10 * GiB, what: 'uploaded updates and published adapters are stored there' }));
  return report('coordinator', dataDir, checks);
}
