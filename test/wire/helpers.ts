// Test fixtures for the wire: a coordinator data dir with a fresh CA (made at run time in
// os.tmpdir()), real gRPC servers on 127.0.0.1:0 (Enrollment server-TLS, Federation mutual
// TLS), and a tiny Federation stub (Heartbeat, RenewCertificate, SubmitUpdate,
// GetUploadStatus, FetchAdapter) wired to the real auth, enrollment and transfer code.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { openCoordinatorDb } from '../../coordinator/store/migrations.ts';
import type { Database as Db } from 'better-sqlite3-multiple-ciphers';
import { toGrpcError } from '../../shared/errors.ts';
import { enrollmentService, federationService, SERVER_OPTIONS, type FederationHandlers } from '../../shared/proto.ts';
import { createEnrollmentServerCredentials, createFederationServerCredentials } from '../../shared/tls.ts';
import { readServerPki, type LoadedCa } from '../../certs/ca.ts';
import { createEnrollmentHandlers, pkiDirOf, renewSiteCertificate, setupCoordinatorPki, sqlitePathOf } from '../../coordinator/enrollment.ts';
import { authenticateCall, pkiAuthDeps, type AuthDeps, type CallerIdentity } from '../../coordinator/auth.ts';

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `fedlora-${prefix}-`));
}

export function bindAsync(server: grpc.Server, creds: grpc.ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) => server.bindAsync('127.0.0.1:0', creds, (err, port) => (err ? reject(err) : resolve(port))));
}

export interface TestCoordinator {
  dataDir: string;
  db: Db;
  ca: LoadedCa;
  auth: AuthDeps;
  enrollEndpoint: string;
  federationEndpoint: string;
  /** identities seen by the stub's handlers, in call order */
  seen: CallerIdentity[];
  close(): Promise<void>;
}

export type ExtraHandlers = (ctx: { db: Db; ca: LoadedCa; auth: AuthDeps; dataDir: string }) => Partial<FederationHandlers>;

export async function startCoordinator(extra?: ExtraHandlers): Promise<TestCoordinator> {
  const dataDir = tempDir('coord');
  const ca = await setupCoordinatorPki({ dataDir, validityDays: 30 });
  const db = openCoordinatorDb(sqlitePathOf(dataDir));
  const auth = pkiAuthDeps(db);
  const pki = readServerPki(pkiDirOf(dataDir));
  const seen: CallerIdentity[] = [];

  const fedServer = new grpc.Server(SERVER_OPTIONS);
  const handlers: FederationHandlers = {
    heartbeat: (call, cb) => {
      try {
        seen.push(authenticateCall(call, auth));
        cb(null, { serverTimeUnixMs: Date.now(), renewCertificate: false, heartbeatIntervalMs: 1000 });
      } catch (e) {
        cb(toGrpcError(e) as grpc.ServiceError);
      }
    },
    renewCertificate: (call, cb) => {
      let who: CallerIdentity;
      try {
        who = authenticateCall(call, auth);
      } catch (e) {
        cb(toGrpcError(e) as grpc.ServiceError);
        return;
      }
      renewSiteCertificate(db, ca, { siteId: who.siteId, csrPem: Buffer.from(call.request.csrPem) })
        .then((r) => cb(null, { certificatePem: r.certificatePem, notAfterUnixMs: r.notAfterUnixMs }))
        .catch((e) => cb(toGrpcError(e) as grpc.ServiceError));
    },
    streamTasks: (call) => call.end(),
    declineTask: (_c, cb) => cb(null, { ok: true, message: '' }),
    fetchAdapter: (call) => call.end(),
    submitUpdate: (_c, cb) => cb({ code: grpc.status.UNIMPLEMENTED, details: 'stub' } as grpc.ServiceError),
    getUploadStatus: (_c, cb) => cb({ code: grpc.status.UNIMPLEMENTED, details: 'stub' } as grpc.ServiceError),
    reportMetrics: (_c, cb) => cb(null, { ok: true, message: '' }),
    secAgg: (_c, cb) => cb(null, { stage: '', payload: Buffer.alloc(0), ready: false }),
    ...(extra ? extra({ db, ca, auth, dataDir }) : {}),
  };
  fedServer.addService(federationService(), handlers);
  const fedPort = await bindAsync(fedServer, createFederationServerCredentials(pki));
  const federationEndpoint = `127.0.0.1:${fedPort}`;

  const enrollServer = new grpc.Server(SERVER_OPTIONS);
  enrollServer.addService(enrollmentService(), createEnrollmentHandlers(db, ca, { federationEndpoint }));
  const enrollPort = await bindAsync(enrollServer, createEnrollmentServerCredentials(pki));

  return {
    dataDir, db, ca, auth, seen,
    enrollEndpoint: `127.0.0.1:${enrollPort}`,
    federationEndpoint,
    async close() {
      fedServer.forceShutdown();
      enrollServer.forceShutdown();
      db.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
