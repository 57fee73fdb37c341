// Persist before acknowledge with group commit, with real processes: the coordinator
// (`fedlora coordinator start`) receives signed uploads over mutual-TLS gRPC from the product's
// uploader and is SIGKILLed in the middle of a group commit, at the two failpoints that bracket
// the group's fsync (shared/failpoints.ts):
//   coordinator.upload.written  the group's chunks are in the .part file, not fsynced
//   coordinator.upload.synced   fsynced, the progress not yet recorded in SQLite
// Asserted each time: what GetUploadStatus acknowledged before the kill is what SQLite holds
// after it (nothing acknowledged lost, nothing unacknowledged recorded), those bytes are on
// disk, the bytes of the unrecorded group are cut when the upload resumes, and after a restart
// the site's uploader resumes from the acknowledged chunk and the update is accepted intact.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3-multiple-ciphers';
import { initCoordinator } from '../../coordinator/service.ts';
import { issueJoinToken } from '../../coordinator/enrollment.ts';
import { parseJobSpec } from '../../coordinator/jobs/spec.ts';
import { jobLayout } from '../../coordinator/publish/layout.ts';
import { enrollSite } from '../../site-agent/enroll.ts';
import { createFederationClient, unary, type FederationClient, type Task } from '../../shared/proto.ts';
import { createSiteChannelCredentials, sitePaths } from '../../shared/tls.ts';
import { signUpdate } from '../../shared/update-signature.ts';
import { uploadFile } from '../../shared/transfer/upload.ts';
import { fromGrpcError } from '../../shared/errors.ts';
import { freePort, waitFor } from './harness.ts';
import { encodeDelta, fakeDelta, rawSpec, TINY_CONFIG } from '../coordinator/helpers.ts';
import { tempDir } from '../wire/helpers.ts';
import { TEST_TIMEOUT_MS } from '../runner/limits.ts';

const BIN = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'cli', 'bin.mjs');
const CHUNK = 64 * 1024;
const GROUP = 4 * CHUNK; // a group is committed once more than 4 chunks are written
const PAUSE = 'pause(600000)'; // "forever" here: the process is SIGKILLed while it waits

const dir = tempDir('upload-kill');
const coordDir = join(dir, 'coordinator');
let ports: { fed: number; enroll: number; http: number };
let adminToken = '';
let coord: { p: ChildProcess; log: string } | undefined;
const sites: { id: string; dir: string; client?: FederationClient; taskId?: string }[] = [{ id: 'site-a', dir: join(dir, 'site-a') }, { id: 'site-b', dir: join(dir, 'site-b') }];
const JOB = rawSpec({
  base_model: { id: 'kill/qwen2', manifest_sha256: 'a'.repeat(64), config: { ...TINY_CONFIG, hidden_size: 512, intermediate_size: 1024, num_hidden_layers: 16, num_attention_heads: 4, num_key_value_heads: 4 } },
  lora: { r: 16, alpha: 32, target_modules: ['q_proj', 'v_proj'], init_seed: 3 }, rounds: 1, min_sites: 2, max_sites: 2, round_deadline_s: 3600,
});
const layout = jobLayout(parseJobSpec(JOB, 'kill test job')).update;

async function startCoordinatorProcess(failpoints?: string): Promise<void> {
  const log = join(dir, `coordinator-${Date.now()}.log`);
  const fd = openSync(log, 'a');
  const p = spawn(process.execPath, [BIN, 'coordinator', 'start', '--data-dir', coordDir], { stdio: ['ignore', fd, fd], env: { ...process.env, ...(failpoints ? { FEDLORA_FAILPOINTS: failpoints } : {}) } });
  closeSync(fd);
  coord = { p, log };
  const up = await waitFor('the coordinator HTTP API', 60_000, async () => (p.exitCode !== null ? 'exited' : (await fetch(`http://127.0.0.1:${ports.http}/healthz`)).ok ? 'up' : null));
  if (up === 'exited') throw new Error(`the coordinator exited ${p.exitCode} at start: ${readFileSync(log, 'utf8').slice(-800)}`);
}

async function killCoordinator(): Promise<void> {
  const p = coord!.p;
  if (p.exitCode === null && p.signalCode === null) {
    const gone = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await gone;
  }
}

/** The coordinator's SQLite, read-only (WAL: safe while it runs or after a kill). */
function progress(updateId: string): { status: string; received_chunks: number; received_bytes: number; path: string } {
  const db = new Database(join(coordDir, 'coordinator.sqlite'), { readonly: true, fileMustExist: true });
  try {
    return db.prepare('SELECT status, received_chunks, received_bytes, path FROM updates WHERE update_id = ?').get(updateId) as never;
  } finally {
    db.close();
  }
}

function makeUpdate(site: (typeof sites)[number], updateId: string) {
  const bytes = encodeDelta(layout, fakeDelta(layout, site.id, 1));
  const file = join(dir, `${updateId}.bin`);
  writeFileSync(file, bytes);
  const fields = { updateId, jobId: 'job-kill', round: 1, baseVersion: 0, sha256: createHash('sha256').update(bytes).digest('hex'), numExamples: 7 };
  return { bytes, file, header: { ...fields, taskId: site.taskId!, signature: signUpdate(readFileSync(sitePaths(site.dir).key), fields) } };
}

beforeAll(async () => {
  ports = { fed: await freePort(), enroll: await freePort(), http: await freePort() };
  const local = (port: number) => ({ host: '127.0.0.1', port });
  const init = await initCoordinator({ dataDir: coordDir, config: { federation: local(ports.fed), enrollment: local(ports.enroll), http: local(ports.http), rounds: { tick_ms: 100 }, transfer: { commit_group_bytes: GROUP } } });
  adminToken = init.adminToken;
  const db = new Database(join(coordDir, 'coordinator.sqlite'));
  const tokens = sites.map((s) => issueJoinToken(db, { siteId: s.id, ttlMs: 600_000, enrollEndpoint: `127.0.0.1:${ports.enroll}`, caSha256: init.caSha256 }).token);
  db.close();
  await startCoordinatorProcess();
  for (const [i, s] of sites.entries()) {
    mkdirSync(s.dir, { recursive: true });
    await enrollSite({ token: tokens[i], siteDir: s.dir });
    s.client = createFederationClient(`127.0.0.1:${ports.fed}`, createSiteChannelCredentials(s.dir));
    await unary(s.client.heartbeat.bind(s.client), { agentVersion: 'kill-test', state: 'idle' });
  }
  const res = await fetch(`http://127.0.0.1:${ports.http}/api/jobs?id=job-kill`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${adminToken}` }, body: JSON.stringify(JOB) });
  expect(res.status).toBe(201);
  for (const s of sites) {
    const task = await new Promise<Task>((resolve, reject) => {
      const stream = s.client!.streamTasks({ agentVersion: 'kill-test', maxParallelTasks: 1 });
      stream.on('data', (t: Task) => { if (t.jobId === 'job-kill') { resolve(t); stream.cancel(); } });
      stream.on('error', (e) => { if ((e as { code?: number }).code !== 1) reject(e); });
    });
    s.taskId = task.taskId;
  }
}, 1.5 * TEST_TIMEOUT_MS);

afterAll(async () => {
  for (const s of sites) s.client?.close();
  if (coord) await killCoordinator();
  rmSync(dir, { recursive: true, force: true });
});

/** Upload until the coordinator stops at `point` on the third group, SIGKILL it there. */
async function killDuringThirdGroup(site: (typeof sites)[number], updateId: string, point: 'coordinator.upload.written' | 'coordinator.upload.synced') {
  await killCoordinator();
  await startCoordinatorProcess(`${point}=2*off->${PAUSE}`);
  const u = makeUpdate(site, updateId);
  expect(u.bytes.length).toBeGreaterThan(20 * CHUNK);
  const upload = uploadFile(site.client!, u.header, u.file, { chunkSize: CHUNK, resume: true, attempts: 1 }).then(() => null, (e) => e);
  await waitFor(`the coordinator to stop at ${point}`, 120_000, () => readFileSync(coord!.log, 'utf8').includes(`fedlora failpoint ${point} reached: ${PAUSE}`) || null);
  // what the coordinator acknowledges now (it still answers while the commit waits)
  const acked = await unary(site.client!.getUploadStatus.bind(site.client!), { updateId });
  const written = statSync(progress(updateId).path).size;
  await killCoordinator();
  const err = await upload;
  expect(err, 'the upload was cut by the kill').not.toBeNull();
  return { u, acked, written };
}

describe('fault: coordinator SIGKILLed inside a group commit of an upload', () => {
  it.each([['coordinator.upload.written', 0], ['coordinator.upload.synced', 1]] as const)('at %s: the acknowledged progress survives, the unrecorded group is cut, the upload resumes and is accepted intact', async (point, i) => {
    const site = sites[i];
    const updateId = `kill-${i}`;
    const { u, acked, written } = await killDuringThirdGroup(site, updateId, point);
    // two groups were committed (more than 4 chunks each), the third written but not recorded
    expect(acked.receivedChunks).toBeGreaterThanOrEqual(10);
    expect(written).toBeGreaterThan(acked.receivedBytes);
    const after = progress(updateId);
    expect({ chunks: after.received_chunks, bytes: after.received_bytes, status: after.status }).toEqual({ chunks: acked.receivedChunks, bytes: acked.receivedBytes, status: 'receiving' });
    expect(readFileSync(after.path).subarray(0, acked.receivedBytes).equals(u.bytes.subarray(0, acked.receivedBytes))).toBe(true);
    await startCoordinatorProcess();
    const sent: number[] = [];
    const res = await uploadFile(site.client!, u.header, u.file, { chunkSize: CHUNK, resume: true, attempts: 3, onChunkSent: (c) => void sent.push(c) }).catch((e) => { throw fromGrpcError(e); });
    expect(res).toMatchObject({ complete: true, resumedFromChunk: acked.receivedChunks, sha256: u.header.sha256 });
    expect(sent[0]).toBe(acked.receivedChunks);
    const done = progress(updateId);
    expect(done.status).toBe('accepted');
    expect(readFileSync(done.path).equals(u.bytes)).toBe(true);
  }, 2.5 * TEST_TIMEOUT_MS);
});
