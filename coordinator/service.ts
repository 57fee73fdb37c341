// The coordinator process: store + round engine + Federation (mTLS) + Enrollment (server TLS)
// + HTTP. `initCoordinator` prepares a data dir; `startCoordinator` runs it and returns the
// bound ports (port 0 in the config = any free port) and a stop() that closes everything.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import YAML from 'yaml';
import { pino, type Logger } from 'pino';
import { survivedErrors } from './metrics/survived-errors.ts';
import { fail } from '../shared/errors.ts';
import { enrollmentService, federationService, SERVER_OPTIONS } from '../shared/proto.ts';
import { widenConnectionWindow } from '../shared/http2-window.ts';
import { createEnrollmentServerCredentials, createFederationServerCredentials } from '../shared/tls.ts';
import { readManifestSigner, readServerPki } from '../certs/ca.ts';
import { createEnrollmentHandlers, loadCoordinatorCa, pkiDirOf, setupCoordinatorPki, sqlitePathOf } from './enrollment.ts';
import { pkiAuthDeps } from './auth.ts';
import { configPathOf, hashToken, loadCoordinatorConfig, newAdminToken, parseCoordinatorConfig, type CoordinatorConfig } from './config.ts';
import { CoordinatorStore } from './store/store.ts';
import { expireSideTasks } from './store/side-tasks.ts';
import { RoundEngine } from './rounds/index.ts';
import { createFederationHandlers } from './grpc/federation.ts';
import { buildHttpApp } from './http/app.ts';
import { watchCrl } from './crl-watch.ts';
import { createNoiseKey, loadNoiseKey, noiseKeyPathOf } from './privacy/noise-key.ts';
import { loadFailpoints } from '../shared/failpoints.ts';

export interface InitOptions {
  dataDir: string;
  /** Extra DNS names / IPs for the server certificate. */
  sans?: string[];
  config?: Record<string, unknown>;
  force?: boolean;
}

/** Create <dataDir>/coordinator.yaml, the CA, server certificate and manifest key, the DP noise
 *  key (privacy.noise_key_file, kept if it exists), and one admin token (returned once; only its
 *  sha256 is stored; also written to <dataDir>/admin.token 0600). */
export async function initCoordinator(o: InitOptions): Promise<{ configPath: string; adminToken: string; caSha256: string }> {
  const cfgPath = configPathOf(o.dataDir);
  if (existsSync(cfgPath) && !o.force) throw fail('FEDLORA_ERR_CONFIG', `${cfgPath} already exists: this data dir is initialised`);
  mkdirSync(o.dataDir, { recursive: true, mode: 0o700 });
  const ca = await setupCoordinatorPki({ dataDir: o.dataDir, sans: o.sans, force: o.force });
  const adminToken = newAdminToken();
  const cfg = parseCoordinatorConfig({ ...(o.config ?? {}), admin_tokens: [{ name: 'init', sha256: hashToken(adminToken) }] }, 'coordinator init');
  writeFileSync(cfgPath, YAML.stringify(cfg), { mode: 0o600 });
  writeFileSync(`${o.dataDir}/admin.token`, adminToken + '\n', { mode: 0o600 });
  createNoiseKey(noiseKeyPathOf(o.dataDir, cfg.privacy.noise_key_file));
  new CoordinatorStore(sqlitePathOf(o.dataDir)).close(); // migrations run now
  return { configPath: cfgPath, adminToken, caSha256: ca.sha256 };
}

export interface StartOptions {
  now?: () => number;
  logger?: boolean;
  /** The process log (default: pino at config.log_level, silent with logger: false). */
  log?: Logger;
}

export interface RunningCoordinator {
  federationPort: number;
  enrollmentPort: number;
  httpPort: number;
  /** host:port strings as sites and researchers dial them */
  federationEndpoint: string;
  enrollmentEndpoint: string;
  httpUrl: string;
  engine: RoundEngine;
  store: CoordinatorStore;
  config: CoordinatorConfig;
  stop(): Promise<void>;
}

function bind(server: grpc.Server, addr: string, creds: grpc.ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) => server.bindAsync(addr, creds, (e, port) => (e ? reject(fail('FEDLORA_ERR_UNAVAILABLE', `cannot listen on ${addr}: ${e.message}`)) : resolve(port))));
}

const dialHost = (h: string) => (h === '0.0.0.0' || h === '::' ? '127.0.0.1' : h);

/** Start the coordinator for a data dir (or a loaded config). Resumes running jobs. */
export async function startCoordinator(configOrDir: CoordinatorConfig | string, o: StartOptions = {}): Promise<RunningCoordinator> {
  const config = typeof configOrDir === 'string' ? loadCoordinatorConfig(configOrDir) : configOrDir;
  const { dataDir } = config;
  loadFailpoints(); // a bad FEDLORA_FAILPOINTS stops the start here (crash tests only)
  const keyWarnings: string[] = [];
  const noiseKey = loadNoiseKey(noiseKeyPathOf(dataDir, config.privacy.noise_key_file), keyWarnings); // never logged
  const store = new CoordinatorStore(sqlitePathOf(dataDir));
  const pkiDir = pkiDirOf(dataDir);
  const pki = readServerPki(pkiDir);
  const signer = readManifestSigner(pkiDir);
  const ca = await loadCoordinatorCa(dataDir);
  const engine = new RoundEngine({ store, dataDir, signer, now: o.now, heartbeatTimeoutMs: config.heartbeat.timeout_ms, noiseKey });
  // Structured log of the federation's life (pino, level from the config; silent in tests).
  const log = o.log ?? pino({ level: o.logger === false ? 'silent' : config.log_level, base: { svc: 'coordinator' } });
  for (const w of keyWarnings) log.warn(w);
  // Failed audit writes and engine ticks are survived, never silently: logged and in /metrics.
  const errors = survivedErrors(log);
  engine.on('error', (e: Error) => errors.record('engine_tick', e));
  engine.on('round', (jobId: string, round: number) => {
    const r = store.currentRound(jobId);
    log.info({ job: jobId, round, attempt: r?.attempt, state: r?.state, selected: r ? JSON.parse(r.selected_json) : [] }, 'round');
  });
  engine.on('published', (jobId: string, version: number) => log.info({ job: jobId, version }, 'adapter published'));
  engine.on('job', (jobId: string) => {
    const j = store.job(jobId);
    log.info({ job: jobId, status: j?.status, error: j?.error ?? undefined }, 'job');
  });
  engine.on('update', (jobId: string, round: number, siteId: string) => log.info({ job: jobId, round, site: siteId }, 'update accepted'));

  const serverOptions: grpc.ServerOptions = { ...SERVER_OPTIONS, 'grpc.keepalive_time_ms': 30_000, 'grpc.keepalive_timeout_ms': 10_000, 'grpc.keepalive_permit_without_calls': 1, 'grpc.http2.min_ping_interval_without_data_ms': 10_000 };
  const fed = new grpc.Server(serverOptions);
  const { handlers, hub, crossEval } = createFederationHandlers({
    engine, secagg: engine.secagg, db: store.db, ca, auth: pkiAuthDeps(store.db), chunkSize: config.transfer.chunk_size, maxUpdateBytes: config.transfer.max_update_bytes,
    heartbeatIntervalMs: config.heartbeat.interval_ms, requireUpdateSignature: config.transfer.require_update_signature, commitGroupBytes: config.transfer.commit_group_bytes, siteCertDays: config.site_cert_days,
    signerCertPem: signer.certPem, crossEvalUploadTimeoutMs: config.side_tasks.cross_eval_upload_timeout_ms, errors,
  });
  fed.addService(federationService(), handlers);
  const fedCreds = createFederationServerCredentials(pki);
  const crl = watchCrl({ db: store.db, ca, creds: fedCreds, log });
  await crl.check(); // the listener starts with the CRL: a revoked certificate never completes a handshake
  const federationPort = await bind(fed, `${config.federation.host}:${config.federation.port}`, fedCreds);
  widenConnectionWindow(fed); // uploads: without it, 64 KiB in flight per connection
  const federationEndpoint = config.federation.public_endpoint ?? `${dialHost(config.federation.host)}:${federationPort}`;

  const enr = new grpc.Server(SERVER_OPTIONS);
  enr.addService(enrollmentService(), createEnrollmentHandlers(store.db, ca, {
    federationEndpoint, validityDays: config.site_cert_days,
  }));
  const enrollmentPort = await bind(enr, `${config.enrollment.host}:${config.enrollment.port}`, createEnrollmentServerCredentials(pki));

  const app = await buildHttpApp({ engine, config, manifestKeyPem: signer.certPem, logger: false, log, errors });
  await app.listen({ host: config.http.host, port: config.http.port });
  const addr = app.server.address();
  const httpPort = typeof addr === 'object' && addr ? addr.port : config.http.port;

  engine.start(config.rounds.tick_ms);
  void engine.tick().catch((e) => errors.record('engine_tick', e, { after: 'start' })); // resume running jobs now
  // Cross-site evaluation requests are picked up (and resumed after a restart) on the engine's
  // tick cadence (coordinator/crosseval); unanswered side tasks expire on it too.
  const sideTaskTick = () => {
    try {
      const expired = expireSideTasks(store.db, engine.now(), config.side_tasks.expire_ms);
      if (expired) log.info({ expired }, 'side tasks expired');
      crossEval.tick();
    } catch (e) {
      log.error({ err: (e as Error).message }, 'cross-eval dispatch error');
    }
  };
  sideTaskTick();
  const crossEvalTimer = setInterval(sideTaskTick, config.rounds.tick_ms);
  crossEvalTimer.unref();
  // A revocation (here or by `fedlora site revoke` on the same file) reaches the handshake within a tick.
  const crlTimer = setInterval(() => void crl.check(), config.rounds.tick_ms);
  crlTimer.unref();

  let stopped = false;
  return {
    federationPort, enrollmentPort, httpPort, federationEndpoint,
    enrollmentEndpoint: `${dialHost(config.enrollment.host)}:${enrollmentPort}`,
    httpUrl: `http://${dialHost(config.http.host)}:${httpPort}`,
    engine, store, config,
    async stop() {
      if (stopped) return;
      stopped = true;
      await engine.stop();
      clearInterval(crossEvalTimer);
      clearInterval(crlTimer);
      hub.close();
      await Promise.all([fed, enr].map((s) => new Promise<void>((resolve) => {
        const t = setTimeout(() => { s.forceShutdown(); resolve(); }, 2000);
        s.tryShutdown(() => { clearTimeout(t); resolve(); });
      })));
      await app.close();
      store.close();
    },
  };
}
