// Property-based fuzzing of the Federation service at the protobuf layer, over the real wire
// (grpc-js client with pass-through serializers → a coordinator on 127.0.0.1 with mutual TLS):
// for every method, random bytes, hand-encoded fields of any wire type (strings where integers
// are expected, varints over 10 bytes, lengths past the end, open groups, invalid wire types,
// huge repeated fields) and mutated valid messages (bit flips, truncation, inserted bytes).
//
// Oracle for each call: we decode the same bytes with the service's own deserializer. Bytes it
// cannot decode must end with grpc-js's INTERNAL "Error deserializing request" (a protocol error:
// the handler never runs); bytes it decodes must end with the answer the decoded request
// deserves — a catalogued FEDLORA_ERR_* status (never FEDLORA_ERR_INTERNAL) for anything wrong,
// OK only where the decoded request is legitimately valid (e.g. a Heartbeat). A message above
// the server's max receive size ends with RESOURCE_EXHAUSTED. After each family the state
// snapshot (see grpc-wire-fixture.ts for what "no state change" means) is unchanged, and the
// coordinator still answers a Heartbeat; at the end it still accepts a valid upload.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import * as grpc from '@grpc/grpc-js';
import { federationService, MAX_MESSAGE_BYTES, type AdapterChunk, type HeartbeatResponse, type SubmitUpdateResponse, type UploadStatusResponse } from '../../shared/proto.ts';
import { encodeDelta, fakeDelta } from '../coordinator/helpers.ts';
import { wireFixture, stillServes, outcome, rawUnary, rawClientStream, rawServerStream, expectSameState, JOB, SA_JOB, type Outcome, type WireFixture } from './grpc-wire-fixture.ts';
import { protoGarbage, mutations, mutate, encodeField, tag, varint } from './proto-bytes.ts';

const RUNS = Number(process.env.FEDLORA_FUZZ_RUNS ?? 1000);
let fx: WireFixture;
beforeAll(async () => {
  fx = await wireFixture();
});
afterAll(async () => fx?.close());

type Codec = { requestSerialize(o: unknown): Buffer; requestDeserialize(b: Buffer): any; responseDeserialize(b: Buffer): any };
const svc = federationService() as unknown as Record<string, Codec>;
const decode = (method: string, b: Buffer): { ok: true; msg: any } | { ok: false } => {
  try {
    return { ok: true, msg: svc[method].requestDeserialize(b) };
  } catch {
    return { ok: false };
  }
};

/** Random bytes, hand-encoded fields, or a mutated seed. */
function rawInput(seeds: Buffer[]): fc.Arbitrary<Buffer> {
  return fc.oneof(
    fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
    protoGarbage(),
    fc.tuple(fc.constantFrom(...seeds), mutations).map(([s, m]) => mutate(s, m)),
    fc.constantFrom(...seeds),
  );
}

function expectCode(o: Outcome, codes: string[], what: string): void {
  expect(o.kind, what).toBe('fedlora');
  if (o.kind === 'fedlora') expect(codes, `${what}: ${o.code}: ${o.message}`).toContain(o.code);
}

/** The family's state is unchanged, nothing is left in a spool that should not be, and the
 *  fuzzing site's own normal client is still served. */
async function familyEnds(before: ReturnType<WireFixture['snapshot']>, what: string): Promise<void> {
  await fx.settled();
  expectSameState(before, fx.snapshot(), what);
  fx.checkSpoolFiles();
  const hb = await new Promise<HeartbeatResponse>((resolve, reject) => fx.clients.fz.heartbeat({ agentVersion: 'fuzz', state: 'idle' }, new grpc.Metadata(), {}, (e, r) => (e ? reject(e) : resolve(r!))));
  expect(hb.heartbeatIntervalMs).toBeGreaterThan(0);
}

async function unaryFamily(method: string, seeds: object[], judge: (req: any, o: Outcome, res?: Buffer) => void, runs = RUNS): Promise<Record<string, number>> {
  const before = fx.snapshot();
  const seen: Record<string, number> = {};
  await fc.assert(
    fc.asyncProperty(rawInput(seeds.map((s) => svc[method].requestSerialize(s))), async (bytes) => {
      const d = decode(method, bytes);
      const { err, res } = await rawUnary(fx.raw, fx.clock, method, bytes);
      const o = outcome(err);
      seen[o.kind === 'fedlora' ? o.code : o.kind] = (seen[o.kind === 'fedlora' ? o.code : o.kind] ?? 0) + 1;
      if (!d.ok) return void expect(o.kind, `${method}: undecodable bytes ${bytes.toString('hex').slice(0, 80)}`).toBe('undecodable');
      expect(o.kind, `${method}: decodable request ${JSON.stringify(d.msg).slice(0, 200)}`).not.toBe('undecodable');
      judge(d.msg, o, res);
    }),
    { numRuns: runs },
  );
  await familyEnds(before, `raw ${method}`);
  return seen;
}

describe('fuzz: raw protobuf bytes on every Federation method (mTLS, live coordinator)', () => {
  it('Heartbeat: any decodable request is a heartbeat (OK), anything else a protocol error', async () => {
    const seen = await unaryFamily('Heartbeat', [{ agentVersion: '0.1', state: 'training', currentTaskId: 't', trainingTokensPerS: 12.5 }], (_req, o, res) => {
      expect(o.kind).toBe('ok');
      expect(svc.Heartbeat.responseDeserialize(res!).serverTimeUnixMs).toBeGreaterThan(0);
    });
    expect(seen.undecodable).toBeGreaterThan(RUNS / 20);
    expect(seen.ok).toBeGreaterThan(RUNS / 20);
  });

  it('RenewCertificate: garbage CSRs are refused (FEDLORA_ERR_CSR), no certificate is issued', async () => {
    const csrish = Buffer.from('-----BEGIN CERTIFICATE REQUEST-----\nMIIBAzCBqgIBADAN\n-----END CERTIFICATE REQUEST-----\n');
    await unaryFamily('RenewCertificate', [{ csrPem: csrish }, { csrPem: Buffer.alloc(0) }], (req, o) => {
      expectCode(o, ['FEDLORA_ERR_CSR'], `RenewCertificate ${Buffer.from(req.csrPem).toString('hex').slice(0, 60)}`);
    });
  });

  it('DeclineTask: another site\'s or an unknown task id is NOT_FOUND and declines nothing', async () => {
    const other = fx.tasks.ok2.task_id;
    await unaryFamily('DeclineTask', [{ taskId: other, reason: 'policy', code: 'FEDLORA_ERR_POLICY' }, { taskId: 'xeval-upload-1-ok2', reason: 'x', code: 'y' }], (req, o) => {
      expectCode(o, ['FEDLORA_ERR_NOT_FOUND'], `DeclineTask ${JSON.stringify(req).slice(0, 120)}`);
      if (o.kind === 'fedlora') expect(o.message).toMatch(/DeclineRequest\.task_id/);
    });
  });

  it('GetUploadStatus: unknown or other sites\' update ids read as unknown; nothing is created', async () => {
    await unaryFamily('GetUploadStatus', [{ updateId: fx.okUpdateId }, { updateId: 'x'.repeat(200) }], (req, o, res) => {
      if (o.kind === 'ok') {
        const r = svc.GetUploadStatus.responseDeserialize(res!) as UploadStatusResponse;
        const row = fx.live.coord.store.update(req.updateId);
        if (r.known) expect(row?.site_id).toBe('fz');
        else expect(row?.site_id ?? 'none').not.toBe('fz');
      } else expectCode(o, ['FEDLORA_ERR_UPDATE_INVALID', 'FEDLORA_ERR_ROUND_CLOSED'], `GetUploadStatus ${req.updateId}`);
    });
  });

  it('ReportMetrics: undecodable, wrongly typed and oversized reports store no metric', async () => {
    const metric = { kind: 'global', name: 'loss', value: 1.5, count: 10, modelOwner: '', adapterVersion: 0 };
    const seeds = [
      { taskId: fx.tasks.fz.task_id, jobId: 'no-such-job', round: 1, phase: 'eval', metrics: [metric, { ...metric, name: 'accuracy', value: 0.5 }] },
      { taskId: '', jobId: 'no-such-job', round: 1, phase: 'train', metrics: Array.from({ length: 300 }, (_, i) => ({ ...metric, name: `m${i}` })) },
    ];
    // huge repeated field: 60k Metric entries (~1.5 MB) for a real job, under the 8 MiB limit
    const many = Buffer.concat([encodeField({ field: 2, wt: 2, body: Buffer.from(JOB), lengthDelta: 0 }), ...Array.from({ length: 60_000 }, (_, i) => encodeField({ field: 4, wt: 2, body: svc.ReportMetrics.requestSerialize({ metrics: [{ ...metric, value: i }] }).subarray(2), lengthDelta: 0 }))]);
    const before = fx.snapshot();
    const big = outcome((await rawUnary(fx.raw, fx.clock, 'ReportMetrics', many)).err);
    expectCode(big, ['FEDLORA_ERR_INVALID_ARGUMENT'], 'ReportMetrics with 60000 metrics');
    if (big.kind === 'fedlora') expect(big.message).toMatch(/MetricsReport\.metrics/);
    expectSameState(before, fx.snapshot(), 'a 60000-metric report');
    await unaryFamily('ReportMetrics', seeds, (req, o) => {
      expect(req.jobId === JOB || req.jobId === SA_JOB, 'the fuzzer never aims a valid report at a real job').toBe(false);
      expectCode(o, ['FEDLORA_ERR_NOT_FOUND', 'FEDLORA_ERR_INVALID_ARGUMENT'], `ReportMetrics ${JSON.stringify(req).slice(0, 160)}`);
      if (o.kind === 'fedlora') expect(o.message).toMatch(/MetricsReport\./);
    });
  });

  it('SecAgg: only status/config of the secure-aggregation job answer OK; nothing is stored', async () => {
    const seeds = [
      { jobId: SA_JOB, round: 1, stage: 'status', payload: Buffer.alloc(0) },
      { jobId: SA_JOB, round: 1, stage: 'advertise', payload: Buffer.from(JSON.stringify({ attempt: 1, msg: { siteId: 'ok1', cPk: 'A'.repeat(43), sPk: 'B'.repeat(43) } })) },
      { jobId: SA_JOB, round: 1, stage: 'share', payload: Buffer.from(JSON.stringify({ attempt: 1, msg: { siteId: 'fz', shares: [null, 1, { from: 'fz' }] } })) },
      { jobId: JOB, round: 1, stage: 'config', payload: Buffer.alloc(0) },
    ];
    await unaryFamily('SecAgg', seeds, (req, o) => {
      const readOnly = req.jobId === SA_JOB && req.round === 1 && (req.stage === 'status' || req.stage === 'config');
      if (o.kind === 'ok') expect(readOnly, `SecAgg OK for ${JSON.stringify(req).slice(0, 200)}`).toBe(true);
      else expect(o.kind, JSON.stringify(req).slice(0, 200)).toBe('fedlora');
    });
  });

  it('StreamTasks: a decodable request streams the site\'s own open tasks, garbage is a protocol error', async () => {
    const before = fx.snapshot();
    const mine = new Set([fx.tasks.fz.task_id, fx.saTasks.fz.task_id]);
    // Each accepted stream is cancelled after its first task (a StreamTasks stream never ends by
    // itself). Node's HTTP/2 layer closes a connection whose client resets streams faster than
    // its rapid-reset limit (a burst of ~1000): a new connection every 200 cases stays below it.
    let client = fx.raw;
    let cases = 0;
    await fc.assert(
      fc.asyncProperty(rawInput([svc.StreamTasks.requestSerialize({ agentVersion: 'x', maxParallelTasks: 1 })]), async (bytes) => {
        if (++cases % 200 === 0) client = fx.newRawClient();
        const d = decode('StreamTasks', bytes);
        const { err, replies } = await rawServerStream(client, fx.clock, 'StreamTasks', bytes, 1);
        const o = outcome(err);
        if (!d.ok) return void expect(o.kind).toBe('undecodable');
        expect(o.kind).toBe('ok');
        expect(mine.has(svc.StreamTasks.responseDeserialize(replies[0]).taskId)).toBe(true);
      }),
      { numRuns: RUNS },
    );
    await familyEnds(before, 'raw StreamTasks');
  });

  it('FetchAdapter: only a published version inside its size streams; everything else is NOT_FOUND / INVALID_ARGUMENT', async () => {
    const v0 = fx.live.coord.store.adapterVersion(JOB, 0)!;
    const seeds = [{ jobId: JOB, version: 0, offset: 0, ownerSite: '' }, { jobId: JOB, version: 0, offset: v0.size - 3, ownerSite: '' }, { jobId: JOB, version: 1, offset: 0, ownerSite: 'ok1' }];
    const before = fx.snapshot();
    await fc.assert(
      fc.asyncProperty(rawInput(seeds.map((s) => svc.FetchAdapter.requestSerialize(s))), async (bytes) => {
        const d = decode('FetchAdapter', bytes);
        const { err, replies } = await rawServerStream(fx.raw, fx.clock, 'FetchAdapter', bytes);
        const o = outcome(err);
        if (!d.ok) return void expect(o.kind).toBe('undecodable');
        const q = d.msg;
        const row = q.ownerSite ? fx.live.coord.store.adapterVersion(q.jobId, q.version, q.ownerSite) : fx.live.coord.store.adapterVersion(q.jobId, q.version);
        if (!row) return expectCode(o, ['FEDLORA_ERR_NOT_FOUND'], `FetchAdapter ${JSON.stringify(q)}`);
        if (!(q.offset <= row.size)) return expectCode(o, ['FEDLORA_ERR_INVALID_ARGUMENT'], `FetchAdapter ${JSON.stringify(q)}`);
        expect(o.kind).toBe('ok');
        const msgs = replies.map((r) => svc.FetchAdapter.responseDeserialize(r) as AdapterChunk);
        expect(msgs[0].part === 'header' && msgs[0].header?.ref?.sha256).toBe(row.sha256);
        expect(msgs.slice(1).reduce((n, m) => n + (m.chunk ? Buffer.from(m.chunk.data).length : 0), 0)).toBe(row.size - q.offset);
      }),
      { numRuns: RUNS },
    );
    await familyEnds(before, 'raw FetchAdapter');
  });

  it('SubmitUpdate: garbage and mutated update streams are refused and never accepted', async () => {
    const { layout } = fx.live.coord.engine.jobInfo(JOB);
    const nan = fakeDelta(layout.update, 'fz', 1);
    nan[5] = Number.NaN; // so that even a mutation that leaves the stream intact cannot be accepted
    const badPayload = encodeDelta(layout.update, nan);
    let n = 0;
    const stream = fc.oneof(
      { weight: 10, arbitrary: fc.array(fc.oneof(protoGarbage(), fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b))), { minLength: 1, maxLength: 4 }).map((msgs) => ({ msgs, id: '' })) },
      { weight: 10, arbitrary: fc.tuple(fc.nat(), mutations, fc.boolean()).map(([which, ms, reorder]) => {
        const id = `raw-${++n}`;
        const msgs = fx.goodStream('fz', id, badPayload).msgs.map((m) => svc.SubmitUpdate.requestSerialize(m));
        const i = which % msgs.length;
        msgs[i] = mutate(msgs[i], ms);
        if (reorder && msgs.length > 2) [msgs[1], msgs[2]] = [msgs[2], msgs[1]];
        return { msgs, id };
      }) },
      // Intact streams now and then: a mutation rarely leaves a stream intact, and only an intact
      // one reaches the content check, which must refuse the NaN.
      { weight: 1, arbitrary: fc.constant(null).map(() => {
        const id = `raw-${++n}`;
        return { msgs: fx.goodStream('fz', id, badPayload).msgs.map((m) => svc.SubmitUpdate.requestSerialize(m)), id };
      }) },
    );
    const before = fx.snapshot();
    const seen: Record<string, number> = {};
    await fc.assert(
      fc.asyncProperty(stream, async ({ msgs, id }) => {
        const decoded = msgs.map((m) => decode('SubmitUpdate', m));
        const { err, res } = await rawClientStream(fx.raw, fx.clock, 'SubmitUpdate', msgs);
        const o = outcome(err);
        seen[o.kind === 'fedlora' ? o.code : o.kind] = (seen[o.kind === 'fedlora' ? o.code : o.kind] ?? 0) + 1;
        if (decoded.every((d) => d.ok)) expect(o.kind).not.toBe('undecodable');
        else expect(['undecodable', 'fedlora']).toContain(o.kind);
        if (o.kind === 'ok') {
          // e.g. the trailer was mutated into an unknown field: a partial, resumable upload
          expect((svc.SubmitUpdate.responseDeserialize(res!) as SubmitUpdateResponse).complete).toBe(false);
        }
        if (id) expect(fx.live.coord.store.update(id)?.status ?? 'none').not.toBe('accepted');
      }),
      { numRuns: RUNS },
    );
    expect(seen.FEDLORA_ERR_UPDATE_NONFINITE ?? 0, JSON.stringify(seen)).toBeGreaterThan(0);
    expect(seen.undecodable ?? 0, JSON.stringify(seen)).toBeGreaterThan(0);
    await familyEnds(before, 'raw SubmitUpdate');
  });

  it('messages above the 8 MiB receive limit are RESOURCE_EXHAUSTED on every method, and change nothing', async () => {
    const before = fx.snapshot();
    const unaries = ['Heartbeat', 'RenewCertificate', 'DeclineTask', 'GetUploadStatus', 'ReportMetrics', 'SecAgg'];
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...unaries, 'SubmitUpdate', 'FetchAdapter', 'StreamTasks'), fc.integer({ min: 1, max: 64 * 1024 }), async (method, extra) => {
        // a long string in field 1 (valid protobuf): only its size is wrong
        const body = Buffer.concat([tag(1, 2), varint(BigInt(MAX_MESSAGE_BYTES + extra)), Buffer.alloc(MAX_MESSAGE_BYTES + extra, 0x61)]);
        const r = method === 'SubmitUpdate' ? await rawClientStream(fx.raw, fx.clock, method, [body]) : unaries.includes(method) ? await rawUnary(fx.raw, fx.clock, method, body) : await rawServerStream(fx.raw, fx.clock, method, body);
        expect(outcome(r.err).kind, method).toBe('too-large');
      }),
      { numRuns: 24 },
    );
    await familyEnds(before, 'oversized messages');
  });

  it('after all of it a selected site still uploads a valid update, and it is accepted', async () => {
    await stillServes(fx, 'ok2', 'ok2-after-raw-fuzz');
    expect(fx.live.coord.store.currentRound(JOB)).toMatchObject({ round: 1, state: 'open' });
    expect(fx.live.coord.store.db.prepare(`SELECT COUNT(*) AS n FROM updates WHERE site_id = 'fz' AND status = 'accepted'`).get()).toEqual({ n: 0 });
  });
});
