// A real coordinator for the security tests: initCoordinator + startCoordinator on 127.0.0.1
// (mutual TLS Federation, server-TLS Enrollment, HTTP), sites enrolled with real join tokens
// and CSRs, and helpers to build signed update streams and run the `fedlora` CLI.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { initCoordinator, startCoordinator, type RunningCoordinator } from '../../coordinator/service.ts';
import { issueJoinToken } from '../../coordinator/enrollment.ts';
import { enrollSite } from '../../site-agent/enroll.ts';
import { createFederationClient, type FederationClient, type Task, type UpdateMessage, type SubmitUpdateResponse } from '../../shared/proto.ts';
import { createSiteChannelCredentials, sitePaths } from '../../shared/tls.ts';
import { signUpdate, type SignedUpdateFields } from '../../shared/update-signature.ts';
import { fromGrpcError } from '../../shared/errors.ts';
import { tempDir, rmDir } from '../coordinator/helpers.ts';
import { TEST_TIMEOUT_MS } from '../runner/limits.ts';
import { runProcess } from '../runner/run-process.ts';

export interface LiveCoordinator {
  coord: RunningCoordinator;
  dataDir: string;
  adminToken: string;
  siteDirs: Record<string, string>;
  connect(site: string): FederationClient;
  /** Stop the coordinator and close clients; the data dir stays (until cleanup). */
  stop(): Promise<void>;
  cleanup(): Promise<void>;
}

export async function liveCoordinator(sites: string[], config: Record<string, unknown> = {}): Promise<LiveCoordinator> {
  const dirs: string[] = [];
  const clients: FederationClient[] = [];
  const dataDir = tempDir('sec-coord');
  dirs.push(dataDir);
  const local = { host: '127.0.0.1', port: 0 };
  const init = await initCoordinator({ dataDir, config: { federation: local, enrollment: local, http: local, transfer: { chunk_size: 1024 }, rounds: { tick_ms: 50 }, ...config } });
  const coord = await startCoordinator(dataDir, { logger: false });
  const siteDirs: Record<string, string> = {};
  for (const id of sites) {
    const siteDir = tempDir(`sec-${id}`);
    dirs.push(siteDir);
    const { token } = issueJoinToken(coord.store.db, { siteId: id, ttlMs: 600_000, enrollEndpoint: coord.enrollmentEndpoint, caSha256: init.caSha256 });
    await enrollSite({ token, siteDir });
    siteDirs[id] = siteDir;
  }
  const live: LiveCoordinator = {
    coord, dataDir, adminToken: init.adminToken, siteDirs,
    connect(site) {
      const c = createFederationClient(coord.federationEndpoint, createSiteChannelCredentials(siteDirs[site]));
      clients.push(c);
      return c;
    },
    async stop() {
      for (const c of clients) c.close();
      await coord.stop(); // idempotent
    },
    async cleanup() {
      await live.stop();
      for (const d of dirs) rmDir(d);
    },
  };
  return live;
}

export function nextTask(stream: grpc.ClientReadableStream<Task>): Promise<Task> {
  return new Promise((resolve, reject) => {
    stream.once('data', resolve);
    stream.once('error', reject);
  });
}

/** Client-streaming SubmitUpdate; a gRPC error is turned back into its FedloraError (with .grpcCode). */
export function submit(client: FederationClient, msgs: UpdateMessage[]): Promise<SubmitUpdateResponse> {
  return new Promise((resolve, reject) => {
    const call = client.submitUpdate(new grpc.Metadata(), {}, (err, res) => (err ? reject(Object.assign(fromGrpcError(err), { grpcCode: err.code })) : resolve(res!)));
    for (const m of msgs) call.write(m);
    call.end();
  });
}

export const sha256Hex = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

export function signFor(siteDir: string, f: SignedUpdateFields): Buffer {
  return signUpdate(readFileSync(sitePaths(siteDir).key), f);
}

/** header + one chunk per `chunkSize` bytes + trailer, exactly as a site sends an update. */
export function updateMessages(h: { updateId: string; taskId: string; jobId: string; round: number; baseVersion: number; numExamples: number; signature: Uint8Array; updateNorm?: number; clipped?: boolean }, bytes: Uint8Array, chunkSize = 1 << 20): UpdateMessage[] {
  const sha256 = sha256Hex(bytes);
  const msgs: UpdateMessage[] = [{
    part: 'header',
    header: { ...h, totalBytes: bytes.length, sha256, chunkSize, payloadKind: 'delta', resumeFromChunk: 0, updateNorm: h.updateNorm ?? 0, clipped: h.clipped ?? false, metadataJson: Buffer.alloc(0) },
  } as UpdateMessage];
  let n = 0;
  for (let off = 0; off < bytes.length; off += chunkSize, n++) {
    const data = bytes.subarray(off, Math.min(off + chunkSize, bytes.length));
    msgs.push({ part: 'chunk', chunk: { index: n, offset: off, data, sha256: sha256Hex(data) } } as UpdateMessage);
  }
  msgs.push({ part: 'trailer', trailer: { chunks: n } } as UpdateMessage);
  return msgs;
}

const BIN = fileURLToPath(new URL('../../cli/bin.mjs', import.meta.url));

/** Run the real `fedlora` CLI (node cli/bin.mjs ...) asynchronously; a command that never ends is
 *  stopped at half a test's limit (test/runner/limits.ts), and its stderr says so. */
export async function fedlora(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const r = await runProcess(process.execPath, [BIN, ...args], { timeoutMs: TEST_TIMEOUT_MS / 2 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
