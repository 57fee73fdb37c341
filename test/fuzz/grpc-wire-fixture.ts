// A real coordinator for the gRPC wire fuzzers (test/fuzz/grpc-wire-*.test.ts): started in-process
// on 127.0.0.1 with mutual TLS (test/security/helpers.ts), three enrolled sites — `fz` (the
// fuzzer) and `ok1`/`ok2` (well-behaved) — and two running jobs whose round 1 is open with all
// three selected: `fz-job` (FedAvg deltas; SubmitUpdate reaches the deep content checks) and
// `fz-sa` (secure aggregation; SecAgg reaches the stage machine, held in its advertise stage).
//
// What "no state change" means here (snapshot()): a refused call may leave an audit entry
// (update_rejected / call_refused: the audit trail is intended), a 'rejected' updates row (so
// that update id stays refused), the site's last-seen time and agent strings, a task marked
// 'delivered' instead of 'pending' (the site has seen it), and a resumable 'receiving' upload
// (header + the verified chunk prefix, by design of GetUploadStatus/resume). It may NOT change a
// job, round, task, published adapter version, metric, privacy-ledger entry, cross-eval request,
// certificate/CRL/site status, secure-aggregation state, accepted update, or any file under
// adapters/ or updates/ other than a receiving upload's .part spool (checked by
// checkSpoolFiles: a rejected upload leaves no bytes behind).
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { expect } from 'vitest';
import { ERRORS, type ErrorCode } from '../../shared/errors.ts';
import { unary, type FederationClient, type SubmitUpdateResponse, type UpdateMessage } from '../../shared/proto.ts';
import { createSiteChannelCredentials } from '../../shared/tls.ts';
import type { AdapterLayout } from '../../shared/tensors.ts';
import { parseJobSpec } from '../../coordinator/jobs/spec.ts';
import type { TaskRow } from '../../coordinator/store/store.ts';
import { rawSpec, fakeDelta, encodeDelta } from '../coordinator/helpers.ts';
import { liveCoordinator, submit, signFor, updateMessages, sha256Hex, type LiveCoordinator } from '../security/helpers.ts';
import { WorkClock } from '../runner/work-clock.ts';

export const FED = '/fedlora.v1.Federation/';
export const SITES = ['fz', 'ok1', 'ok2'] as const;
export const JOB = 'fz-job';
export const SA_JOB = 'fz-sa';
/** Small transfer limits so oversize cases stay cheap. */
export const CHUNK_SIZE = 1024;
export const MAX_UPDATE_BYTES = 256 * 1024;

/** The unit of work of the fuzzers' call deadlines: a round trip carrying this many bytes. */
export const UNIT_BYTES = 1 << 20;
/** A call may take this many times the slowest unit seen before it counts as stuck. */
export const CALL_FACTOR = 50;

/** Table/folder name -> its content (JSON / file list). */
export type Snapshot = Record<string, string>;

/** The snapshots are equal; on failure, name the tables/folders that changed. */
export function expectSameState(before: Snapshot, after: Snapshot, what: string): void {
  const changed = Object.keys({ ...before, ...after }).filter((k) => before[k] !== after[k]);
  const around = (a: string, b: string) => {
    let i = 0;
    while (i < a.length && a[i] === b[i]) i++;
    return `…${a.slice(Math.max(0, i - 120), i + 200)}… -> …${b.slice(Math.max(0, i - 120), i + 200)}…`;
  };
  expect(changed.map((k) => `${k}: ${around(before[k] ?? '', after[k] ?? '')}`), `state changed by ${what}`).toEqual([]);
}

export interface WireFixture {
  live: LiveCoordinator;
  clients: Record<(typeof SITES)[number], FederationClient>;
  /** A grpc-js client without message-size limits, for raw bytes (pass-through serializers). */
  raw: grpc.Client;
  /** Another such client for fz, on its own connection (closed by close()). */
  newRawClient(): grpc.Client;
  /** Deadlines of the calls: units are round trips of UNIT_BYTES, timed on fz's raw connection. */
  clock: WorkClock;
  tasks: Record<(typeof SITES)[number], TaskRow>;
  saTasks: Record<(typeof SITES)[number], TaskRow>;
  /** fz-job's update layout (the tensors an update must hold). */
  layout: AdapterLayout;
  /** ok1's update, accepted during setup (another site's update id to aim at). */
  okUpdateId: string;
  /** A valid signed update stream from `site` for fz-job round 1 (fresh update id). */
  goodStream(site: string, updateId: string, bytes?: Uint8Array, chunkSize?: number): { msgs: UpdateMessage[]; bytes: Uint8Array };
  goodBytes(site: string): Buffer;
  snapshot(): Snapshot;
  /** Wait until the coordinator has finished the messages it had already read: a stream answered
   *  early (e.g. INTERNAL for an undecodable message) may still have chunks or a trailer queued. */
  settled(): Promise<void>;
  checkSpoolFiles(): void;
  close(): Promise<void>;
}

export async function wireFixture(): Promise<WireFixture> {
  const live = await liveCoordinator([...SITES], { transfer: { chunk_size: CHUNK_SIZE, max_update_bytes: MAX_UPDATE_BYTES } });
  const { coord, siteDirs, dataDir } = live;
  const clients = Object.fromEntries(SITES.map((s) => [s, live.connect(s)])) as WireFixture['clients'];
  for (const s of SITES) await unary(clients[s].heartbeat.bind(clients[s]), { agentVersion: 'fuzz', state: 'idle' });
  await coord.engine.submitJob(parseJobSpec(rawSpec({ rounds: 2, min_sites: 3, max_sites: 3, round_deadline_s: 3600 })), JOB);
  await coord.engine.submitJob(parseJobSpec(rawSpec({ rounds: 2, min_sites: 3, max_sites: 3, round_deadline_s: 3600, privacy: { secure_aggregation: true } })), SA_JOB);
  await coord.engine.tick();
  const taskOf = (job: string) => Object.fromEntries(SITES.map((s) => [s, coord.store.openTasksFor(s).find((t) => t.job_id === job)!])) as WireFixture['tasks'];
  const tasks = taskOf(JOB);
  const saTasks = taskOf(SA_JOB);
  for (const s of SITES) expect(tasks[s] && saTasks[s], `round 1 of both jobs selects ${s}`).toBeTruthy();
  const { layout } = coord.engine.jobInfo(JOB);
  const rawClients: grpc.Client[] = [];
  const newRawClient = () => {
    const c = new grpc.Client(coord.federationEndpoint, createSiteChannelCredentials(siteDirs.fz), { 'grpc.max_send_message_length': -1, 'grpc.max_receive_message_length': -1 });
    rawClients.push(c);
    return c;
  };
  const raw = newRawClient();
  // One unit: a Heartbeat of UNIT_BYTES of 0xff (undecodable: the transfer over TLS and HTTP/2
  // and a failed decode, no handler), the slowest of five; every call then refines it.
  const probe = Buffer.alloc(UNIT_BYTES, 0xff);
  const clock = await WorkClock.measure(`${UNIT_BYTES >> 20} MiB gRPC round trip`, CALL_FACTOR, 5, () => new Promise((resolve) => raw.makeUnaryRequest(FED + 'Heartbeat', (b: Buffer) => b, (b: Buffer) => b, probe, resolve)));

  const goodBytes = (site: string) => encodeDelta(layout.update, fakeDelta(layout.update, site, 1));
  const goodStream: WireFixture['goodStream'] = (site, updateId, bytes = goodBytes(site), chunkSize = CHUNK_SIZE) => {
    const f = { updateId, jobId: JOB, round: 1, baseVersion: 0, sha256: sha256Hex(bytes), numExamples: 8 };
    return { msgs: updateMessages({ ...f, taskId: tasks[site as 'fz'].task_id, signature: signFor(siteDirs[site], f) }, bytes, chunkSize), bytes };
  };

  // ok1 submits a valid update now: its id is "another site's update" for the fuzzers.
  const okUpdateId = 'ok1-good-update';
  const res = await submit(clients.ok1, goodStream('ok1', okUpdateId).msgs);
  expect(res).toMatchObject({ complete: true });

  const db = coord.store.db;
  const tables = (db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`).all() as { name: string }[]).map((r) => r.name);
  // Tables a refused call may legitimately touch (see the header comment); everything else is compared whole.
  const partial: Record<string, string> = {
    updates: `SELECT * FROM updates WHERE status = 'accepted' ORDER BY update_id`,
    sites: `SELECT id, status, cert_serial, cert_not_after_ms, enrolled_at_ms FROM sites ORDER BY id`,
    // admitting a header marks the task 'delivered' (as StreamTasks does): still the same open task
    tasks: `SELECT task_id, job_id, round, attempt, site_id, kind, CASE status WHEN 'delivered' THEN 'pending' ELSE status END AS status, decline_reason, decline_code FROM tasks ORDER BY task_id`,
  };
  const skipped = new Set(['audit_log', 'audit', 'sqlite_sequence']);
  const fileList = (root: string): string[] => {
    if (!existsSync(root)) return [];
    const out: string[] = [];
    const walk = (d: string) => {
      for (const e of readdirSync(d, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
        const p = join(d, e.name);
        if (e.isDirectory()) walk(p);
        else out.push(p);
      }
    };
    walk(root);
    return out;
  };
  const snapshot = (): Snapshot => {
    const parts: Snapshot = {};
    const json = (v: unknown) => JSON.stringify(v, (_k, x) => (x && typeof x === 'object' && x.type === 'Buffer' ? Buffer.from(x.data).toString('base64') : x));
    for (const t of tables) {
      if (skipped.has(t) || t.startsWith('audit')) continue;
      parts[`table ${t}`] = json(db.prepare(partial[t] ?? `SELECT * FROM "${t}" ORDER BY rowid`).all());
    }
    for (const dir of ['adapters', 'updates']) {
      const files: string[] = [];
      for (const f of fileList(join(dataDir, dir))) {
        if (f.endsWith('.part')) continue; // receiving spools: checkSpoolFiles
        files.push(`${relative(dataDir, f)} ${statSync(f).size} ${createHash('sha256').update(readFileSync(f)).digest('hex')}`);
      }
      parts[`folder ${dir}`] = files.join('\n');
    }
    return parts;
  };
  const checkSpoolFiles = () => {
    // Every .part file is the spool of an upload still 'receiving' (resumable); a rejected or
    // discarded upload leaves no bytes behind, and no spool holds more than its committed progress.
    for (const f of fileList(join(dataDir, 'updates')).filter((p) => p.endsWith('.part'))) {
      const row = db.prepare('SELECT status, received_bytes FROM updates WHERE path = ?').get(f) as { status: string; received_bytes: number } | undefined;
      expect(row?.status, `${relative(dataDir, f)} belongs to an upload that is ${row?.status ?? 'unknown'}`).toBe('receiving');
      expect(statSync(f).size).toBeLessThanOrEqual(row!.received_bytes);
    }
  };
  const settled = async () => {
    // settled = no upload progress for two units of work in a row (the time to take in
    // UNIT_BYTES); a coordinator still busy after a whole call's budget is left to the snapshot check
    const progress = () => JSON.stringify(db.prepare('SELECT update_id, status, received_bytes FROM updates ORDER BY update_id').all());
    const until = Date.now() + clock.budgetMs();
    let last = progress();
    for (let quiet = 0; quiet < 2 && Date.now() < until; ) {
      await new Promise((r) => setTimeout(r, clock.unitMs));
      const now = progress();
      quiet = now === last ? quiet + 1 : 0;
      last = now;
    }
  };
  return {
    settled,
    live, clients, raw, clock, tasks, saTasks, layout: layout.update, okUpdateId, goodStream, goodBytes, snapshot, checkSpoolFiles,
    newRawClient,
    async close() {
      console.log(`[grpc-wire fuzz] call deadlines: ${CALL_FACTOR} x the slowest ${clock.what}: ${clock.referenceMs.toFixed(1)} ms measured at the start, ${clock.unitMs.toFixed(1)} ms at the end`);
      for (const c of rawClients) c.close();
      await live.cleanup();
    },
  };
}

/** After a fuzz family: the coordinator still answers a valid Heartbeat and still accepts a
 *  valid full upload from another selected site. */
export async function stillServes(fx: WireFixture, site: 'ok2', updateId: string): Promise<void> {
  const hb = await unary(fx.clients.ok2.heartbeat.bind(fx.clients.ok2), { agentVersion: 'fuzz', state: 'idle' });
  expect(hb.serverTimeUnixMs).toBeGreaterThan(0);
  const res: SubmitUpdateResponse = await submit(fx.clients[site], fx.goodStream(site, updateId).msgs);
  expect(res).toMatchObject({ complete: true, updateId });
  expect(fx.live.coord.store.update(updateId)?.status).toBe('accepted');
}

// ---- outcomes ---------------------------------------------------------------------------------

export type Outcome =
  | { kind: 'ok' }
  | { kind: 'fedlora'; code: ErrorCode; message: string; status: number }
  | { kind: 'undecodable' } // grpc-js: the request bytes are not a valid protobuf message
  | { kind: 'too-large' }; // grpc-js: a message above the server's max receive size

/** Classify a call's end. Anything else (FEDLORA_ERR_INTERNAL = an exception the handler did not
 *  turn into a catalogued error, an unknown status, a code whose gRPC status disagrees with the
 *  catalogue) fails the test. */
export function outcome(err: grpc.ServiceError | null | undefined): Outcome {
  if (!err) return { kind: 'ok' };
  const details = err.details ?? '';
  const m = /^(FEDLORA_ERR_[A-Z0-9_]+): ([\s\S]+)$/.exec(details);
  if (m) {
    const code = m[1] as ErrorCode;
    expect(code in ERRORS, details).toBe(true);
    expect(code, `unexpected internal error: ${details}`).not.toBe('FEDLORA_ERR_INTERNAL');
    expect(err.code, `gRPC status of ${details}`).toBe(ERRORS[code].grpc);
    expect(m[2].trim().length, details).toBeGreaterThan(8);
    return { kind: 'fedlora', code, message: m[2], status: err.code };
  }
  if (err.code === grpc.status.INTERNAL && /^Error deserializing request/.test(details)) return { kind: 'undecodable' };
  if (err.code === grpc.status.RESOURCE_EXHAUSTED && /larger than/.test(details)) return { kind: 'too-large' };
  throw new Error(`call ended with an unclassified status ${err.code} "${details}"`);
}

/** Units of work of a call that carries `bytes`: a round trip plus its payload. */
export const callUnits = (bytes: number) => 1 + bytes / UNIT_BYTES;

/**
 * Run a call with a deadline for its units of work. A call that completes refines the clock; one
 * that hits its deadline does not (it would stretch every later deadline), and its status names
 * the budget it had.
 */
export async function timedCall<R extends { err: grpc.ServiceError | null }>(clock: WorkClock, units: number, call: (deadline: Date) => Promise<R>): Promise<R> {
  const t = performance.now();
  const r = await call(clock.deadline(units));
  if (r.err?.code === grpc.status.DEADLINE_EXCEEDED) r.err.details = `${r.err.details} (budget ${clock.explain(units)})`;
  else clock.observe(performance.now() - t, units);
  return r;
}

/** Raw unary call with pass-through serializers (bytes in, bytes out). */
export function rawUnary(raw: grpc.Client, clock: WorkClock, method: string, bytes: Buffer): Promise<{ err: grpc.ServiceError | null; res?: Buffer }> {
  return timedCall(clock, callUnits(bytes.length), (deadline) => new Promise((resolve) => {
    raw.makeUnaryRequest(FED + method, (b: Buffer) => b, (b: Buffer) => b, bytes, { deadline }, (err, res) => resolve({ err: err ?? null, res }));
  }));
}

/** Raw client-streaming call (SubmitUpdate): each buffer is one gRPC message. */
export function rawClientStream(raw: grpc.Client, clock: WorkClock, method: string, msgs: Buffer[]): Promise<{ err: grpc.ServiceError | null; res?: Buffer }> {
  return timedCall(clock, callUnits(msgs.reduce((n, m) => n + m.length, 0)), (deadline) => new Promise((resolve) => {
    const call = raw.makeClientStreamRequest(FED + method, (b: Buffer) => b, (b: Buffer) => b, { deadline }, (err, res) => resolve({ err: err ?? null, res }));
    call.on('error', () => undefined);
    for (const m of msgs) call.write(m);
    call.end();
  }));
}

/** Raw server-streaming call: collects the replies until the end (or `stopAfter` replies, then
 *  cancels). Its units: the request and the largest published adapter a reply stream may carry. */
export function rawServerStream(raw: grpc.Client, clock: WorkClock, method: string, bytes: Buffer, stopAfter = Infinity, replyBytes = MAX_UPDATE_BYTES): Promise<{ err: grpc.ServiceError | null; replies: Buffer[] }> {
  return timedCall(clock, callUnits(bytes.length + replyBytes), (deadline) => new Promise((resolve) => {
    const replies: Buffer[] = [];
    const call = raw.makeServerStreamRequest(FED + method, (b: Buffer) => b, (b: Buffer) => b, bytes, { deadline });
    let settled = false;
    const done = (err: grpc.ServiceError | null) => {
      if (settled) return;
      settled = true;
      resolve({ err, replies });
    };
    call.on('data', (b: Buffer) => {
      replies.push(b);
      if (replies.length >= stopAfter) {
        done(null);
        call.cancel();
      }
    });
    call.on('error', (e: grpc.ServiceError) => done(e));
    call.on('end', () => done(null));
  }));
}
