// Property-based fuzzing of the Federation's other messages over the real wire (the normal
// client, mutual TLS, a live coordinator; `fz` is selected in round 1 of fz-job and of the
// secure-aggregation job fz-sa): MetricsReport (NaN/Inf, unknown kinds, huge repeated metrics,
// huge strings, other jobs), FetchAdapterRequest (versions, offsets, owners), DeclineRequest and
// UploadStatusRequest aimed at other sites' tasks and updates, SecAggMessage (random stages and
// payloads, garbage keys in the advertise stage, malformed share lists in the share stage),
// RenewRequest with garbage CSRs, and Heartbeats with NaN/Inf throughput.
//
// Every bad case ends with the catalogued FEDLORA_ERR_* code and a message naming the field;
// after each family the coordinator's state is unchanged (see grpc-wire-fixture.ts) and it
// still answers; at the end a valid upload and a valid metrics report still go in.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { webcrypto } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import type { ErrorCode } from '../../shared/errors.ts';
import type { AdapterChunk, FederationClient, Metric, MetricsReport } from '../../shared/proto.ts';
import { advertiseKeys } from '../../shared/secagg/index.ts';
import { createCsrPem, generateKeyPair, exportPrivateKeyPem } from '../../certs/x509.ts';
import { adapterFiles } from '../../coordinator/publish/publisher.ts';
import { sha256Hex, submit } from '../security/helpers.ts';
import { wireFixture, stillServes, outcome, expectSameState, timedCall, callUnits, MAX_UPDATE_BYTES, JOB, SA_JOB, type Outcome, type WireFixture } from './grpc-wire-fixture.ts';

const RUNS = Number(process.env.FEDLORA_FUZZ_RUNS ?? 1000);
const OTHER_JOB = 'other-job'; // exists, but fz has no task in it
let fx: WireFixture;
let fz: FederationClient;
beforeAll(async () => {
  fx = await wireFixture();
  fz = fx.clients.fz;
  const s = fx.live.coord.store;
  s.insertJob({ id: OTHER_JOB, name: 'other', specJson: s.job(JOB)!.spec_json, now: Date.now() });
  s.setJobStatus(OTHER_JOB, 'completed', Date.now());
});
afterAll(async () => fx?.close());

interface Expect { code: ErrorCode; re: RegExp }
/** The size of a request, for its call's units of work (JSON overstates binary fields: generous). */
const sizeOf = (req: unknown) => JSON.stringify(req)?.length ?? 0;
const call = async <Req, Res>(method: (req: Partial<Req>, md: grpc.Metadata, o: Partial<grpc.CallOptions>, cb: (e: grpc.ServiceError | null, r?: Res) => void) => grpc.ClientUnaryCall, req: Partial<Req>) => {
  const r = await timedCall(fx.clock, callUnits(sizeOf(req)), (deadline) => new Promise<{ err: grpc.ServiceError | null; res?: Res }>((resolve) => method(req, new grpc.Metadata(), { deadline }, (e, res) => resolve({ err: e ?? null, res }))));
  return { o: outcome(r.err), res: r.res };
};
/** A FetchAdapter stream to its end: the outcome and the messages. */
const fetchAdapter = (q: Parameters<FederationClient['fetchAdapter']>[0]) =>
  timedCall(fx.clock, callUnits(sizeOf(q) + MAX_UPDATE_BYTES), (deadline) => new Promise<{ err: grpc.ServiceError | null; msgs: AdapterChunk[] }>((resolve) => {
    const msgs: AdapterChunk[] = [];
    const s = fz.fetchAdapter(q, new grpc.Metadata(), { deadline });
    s.on('data', (m: AdapterChunk) => msgs.push(m));
    s.on('error', (e: grpc.ServiceError) => resolve({ err: e, msgs }));
    s.on('end', () => resolve({ err: null, msgs }));
  })).then((r) => ({ o: outcome(r.err), msgs: r.msgs }));

function expectOne(o: Outcome, want: Expect[], what: string): void {
  expect(o.kind, `${what}: expected ${want.map((w) => w.code).join(' | ')}`).toBe('fedlora');
  if (o.kind !== 'fedlora') return;
  expect(want.some((w) => w.code === o.code && w.re.test(o.message)), `${what}: got ${o.code}: ${o.message.slice(0, 300)}; expected ${want.map((w) => `${w.code} ~ ${w.re}`).join(' | ')}`).toBe(true);
}

/** Run a family: state unchanged afterwards, and fz's own connection still serves a heartbeat. */
async function family<T>(name: string, arb: fc.Arbitrary<T>, body: (x: T) => Promise<void>, runs = RUNS): Promise<void> {
  const before = fx.snapshot();
  await fc.assert(fc.asyncProperty(arb, body), { numRuns: runs });
  await fx.settled();
  expectSameState(before, fx.snapshot(), name);
  fx.checkSpoolFiles();
  const hb = await call(fz.heartbeat.bind(fz), { agentVersion: 'fuzz', state: 'idle' });
  expect(hb.o.kind).toBe('ok');
}

const longText = fc.oneof({ weight: 9, arbitrary: fc.integer({ min: 257, max: 4000 }).map((n) => 'n'.repeat(n)) }, { weight: 1, arbitrary: fc.constant('x'.repeat(1 << 20)) });
const finite = fc.double({ noNaN: true, noDefaultInfinity: true });

describe('fuzz: structured-but-bad Federation messages (mTLS, live coordinator)', () => {
  it('MetricsReport: NaN/Inf, unknown kinds, huge repeated metrics and strings, other jobs — no metric stored', async () => {
    const metric = fc.record({ kind: fc.constantFrom('global', 'local', 'base', 'cross', 'personal'), name: fc.constantFrom('loss', 'accuracy', 'perplexity', 'macro_f1'), value: finite, count: fc.nat(), modelOwner: fc.constantFrom('', 'ok1'), adapterVersion: fc.nat(5) });
    const fault = fc.oneof(
      fc.record({ f: fc.constant('nonfinite' as const), v: fc.constantFrom(Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY) }),
      fc.record({ f: fc.constant('kind' as const), v: fc.string({ maxLength: 40 }).filter((k) => !['global', 'local', 'base', 'cross', 'personal'].includes(k)) }),
      fc.record({ f: fc.constant('tooMany' as const), n: fc.oneof({ weight: 9, arbitrary: fc.integer({ min: 1025, max: 3000 }) }, { weight: 1, arbitrary: fc.constant(20_000) }) }),
      fc.record({ f: fc.constant('longName' as const), v: longText }),
      fc.record({ f: fc.constant('longOwner' as const), v: longText }),
      fc.record({ f: fc.constant('longPhase' as const), v: longText }),
      fc.record({ f: fc.constant('longTask' as const), v: longText }),
      fc.constant({ f: 'emptyName' as const }),
      fc.record({ f: fc.constant('unknownJob' as const), v: fc.string({ maxLength: 60 }).filter((j) => ![JOB, SA_JOB, OTHER_JOB].includes(j)) }),
      fc.constant({ f: 'otherJob' as const }),
    );
    await family('MetricsReport', fc.tuple(fault, fc.array(metric, { minLength: 1, maxLength: 6 }), fc.nat(), fc.constantFrom(JOB, SA_JOB)), async ([f, ms, at, job]) => {
      const metrics: Metric[] = [...ms];
      const i = at % metrics.length;
      const report: MetricsReport = { taskId: fx.tasks.fz.task_id, jobId: job, round: 1, phase: 'eval', metrics };
      let want: Expect[];
      switch (f.f) {
        case 'nonfinite': metrics[i] = { ...metrics[i], value: f.v }; want = [{ code: 'FEDLORA_ERR_INVALID_ARGUMENT', re: /MetricsReport\.metrics: \w+ = (NaN|Infinity|-Infinity) is not finite/ }]; break;
        case 'kind': metrics[i] = { ...metrics[i], kind: f.v }; want = [{ code: 'FEDLORA_ERR_INVALID_ARGUMENT', re: /MetricsReport\.metrics\.kind: ".*" is not global\|local\|base\|cross/s }]; break;
        case 'tooMany': report.metrics = Array.from({ length: f.n }, (_, k) => ({ ...metrics[k % metrics.length] })); want = [{ code: 'FEDLORA_ERR_INVALID_ARGUMENT', re: /MetricsReport\.metrics: \d+ entries, at most 1024 per report/ }]; break;
        case 'longName': metrics[i] = { ...metrics[i], name: f.v }; want = [{ code: 'FEDLORA_ERR_INVALID_ARGUMENT', re: /MetricsReport\.metrics\[\d+\]\.name: \d+ characters, at most 256/ }]; break;
        case 'longOwner': metrics[i] = { ...metrics[i], modelOwner: f.v }; want = [{ code: 'FEDLORA_ERR_INVALID_ARGUMENT', re: /MetricsReport\.metrics\[\d+\]\.model_owner: \d+ characters/ }]; break;
        case 'longPhase': report.phase = f.v; want = [{ code: 'FEDLORA_ERR_INVALID_ARGUMENT', re: /MetricsReport\.phase: \d+ characters/ }]; break;
        case 'longTask': report.taskId = f.v; want = [{ code: 'FEDLORA_ERR_INVALID_ARGUMENT', re: /MetricsReport\.task_id: \d+ characters/ }]; break;
        case 'emptyName': metrics[i] = { ...metrics[i], name: '' }; want = [{ code: 'FEDLORA_ERR_INVALID_ARGUMENT', re: /MetricsReport\.metrics\[\d+\]\.name is empty/ }]; break;
        case 'unknownJob': report.jobId = f.v; want = [{ code: 'FEDLORA_ERR_NOT_FOUND', re: /MetricsReport\.job_id: job .* does not exist/s }]; break;
        case 'otherJob': report.jobId = OTHER_JOB; want = [{ code: 'FEDLORA_ERR_NOT_SELECTED', re: /MetricsReport\.job_id: site fz has no task in job other-job/ }]; break;
      }
      const { o } = await call(fz.reportMetrics.bind(fz), report);
      expectOne(o, want, `MetricsReport ${f.f}`);
    });
  });

  it('FetchAdapterRequest: unpublished versions, offsets past the end and unknown owners are refused; valid ones stream the exact bytes', async () => {
    const store = fx.live.coord.store;
    const v0 = store.adapterVersion(JOB, 0)!;
    const valid = fc.record({ jobId: fc.constantFrom(JOB, SA_JOB), version: fc.constant(0), offset: fc.nat(v0.size), ownerSite: fc.constant('') });
    const req = fc.oneof(valid, fc.record({
      jobId: fc.oneof(fc.constantFrom(JOB, JOB, SA_JOB, OTHER_JOB), fc.string({ maxLength: 30 })),
      version: fc.oneof(fc.constantFrom(0, 0, 1, 2), fc.nat(), fc.constant(2 ** 32 - 1)),
      offset: fc.oneof(fc.nat(3000), fc.constantFrom(2 ** 32, 2 ** 53 - 1)),
      ownerSite: fc.oneof(fc.constantFrom('', '', '', 'ok1', 'fz'), fc.string({ maxLength: 20 })),
    }));
    // regression: a refused FetchAdapter used to tear the stream down without a status (the
    // site waited for its deadline); the refusal must be the stream's status, not its deadline
    const refusal = (await fetchAdapter({ jobId: JOB, version: 99, offset: 0, ownerSite: '' })).o;
    expectOne(refusal, [{ code: 'FEDLORA_ERR_NOT_FOUND', re: /FetchAdapterRequest: job fz-job has no published version 99/ }], 'FetchAdapter version 99');
    let streamed = 0;
    await family('FetchAdapter', req, async (q) => {
      const { o, msgs } = await fetchAdapter(q);
      const row = q.ownerSite ? store.adapterVersion(q.jobId, q.version, q.ownerSite) : store.adapterVersion(q.jobId, q.version);
      if (!row) return expectOne(o, [{ code: 'FEDLORA_ERR_NOT_FOUND', re: /FetchAdapterRequest: job .* has no (published|adapter of site .*) version \d+/s }], JSON.stringify(q));
      if (q.offset > row.size) return expectOne(o, [{ code: 'FEDLORA_ERR_INVALID_ARGUMENT', re: /FetchAdapterRequest\.offset \d+ is outside the \d+-byte adapter/ }], JSON.stringify(q));
      expect(o.kind, JSON.stringify(q)).toBe('ok');
      streamed++;
      expect(msgs[0].part).toBe('header');
      expect(msgs[0].header?.ref?.sha256).toBe(row.sha256);
      const data = Buffer.concat(msgs.slice(1).map((m) => Buffer.from(m.chunk!.data)));
      expect(data.equals(readFileSync(adapterFiles(row).model).subarray(q.offset))).toBe(true);
      for (const m of msgs.slice(1)) expect(m.chunk!.sha256).toBe(sha256Hex(Buffer.from(m.chunk!.data)));
    });
    expect(streamed).toBeGreaterThan(RUNS / 5);
  });

  it('DeclineRequest for other sites\' tasks and unknown tasks: NOT_FOUND, no task declined', async () => {
    const taskId = fc.oneof(
      fc.constantFrom(fx.tasks.ok1.task_id, fx.tasks.ok2.task_id, fx.saTasks.ok1.task_id, `${fx.tasks.fz.task_id}.x`, '', 'xeval-upload-1-fz'),
      fc.string({ maxLength: 80 }).map((s) => `xeval-upload-${s}`),
      fc.string({ maxLength: 80 }).filter((s) => s !== fx.tasks.fz.task_id && s !== fx.saTasks.fz.task_id),
    );
    await family('DeclineTask', fc.record({ taskId, reason: fc.oneof(fc.string({ maxLength: 100 }), longText), code: fc.string({ maxLength: 60 }) }), async (q) => {
      const { o } = await call(fz.declineTask.bind(fz), q);
      expectOne(o, [{ code: 'FEDLORA_ERR_NOT_FOUND', re: /DeclineRequest\.task_id: no (open cross-eval upload )?task .* for site fz/s }], `DeclineTask ${q.taskId.slice(0, 60)}`);
    });
  });

  it('UploadStatusRequest for other sites\' updates reads as unknown (no leak), for fz\'s rejected update as FEDLORA_ERR_UPDATE_INVALID', async () => {
    // one rejected update of fz (bad signature), so that its id is known
    const { msgs } = fx.goodStream('fz', 'fz-rejected-once');
    (msgs[0] as { header: { signature: Buffer } }).header.signature = Buffer.from('not a signature');
    await expect(submit(fz, msgs)).rejects.toMatchObject({ code: 'FEDLORA_ERR_SIGNATURE' });
    const updateId = fc.oneof(fc.constantFrom(fx.okUpdateId, 'fz-rejected-once', 'ok2-never', ''), fc.string({ maxLength: 200 }));
    await family('GetUploadStatus', updateId, async (id) => {
      const { o, res } = await call(fz.getUploadStatus.bind(fz), { updateId: id });
      if (id === 'fz-rejected-once') return expectOne(o, [{ code: 'FEDLORA_ERR_UPDATE_INVALID', re: /update fz-rejected-once is rejected: FEDLORA_ERR_SIGNATURE/ }], id);
      expect(o.kind).toBe('ok');
      expect(res).toEqual({ known: false, receivedChunks: 0, receivedBytes: 0, complete: false });
    });
  });

  it('SecAggMessage in the advertise stage: random stages and payloads, garbage keys — nothing stored', async () => {
    const valid = advertiseKeys('fz', { round: 1, threshold: 2, clipRange: 1, dim: 4 }).msg;
    const key = fc.oneof(fc.string({ maxLength: 50 }), fc.constantFrom('A'.repeat(42), 'A'.repeat(44), '', valid.cPk.slice(1), `${valid.cPk}==`), fc.anything());
    const payload = fc.oneof(
      fc.record({ attempt: fc.constantFrom(1, 1, 0, 2, '1', null), msg: fc.oneof(
        fc.record({ siteId: fc.constant('fz'), cPk: key, sPk: key }),
        fc.record({ siteId: fc.constant('fz'), cPk: fc.constant(valid.cPk), sPk: fc.constant(valid.cPk) }), // one key for both purposes
        fc.record({ siteId: fc.constant('fz'), cPk: fc.constant(valid.cPk), sPk: key }),
        fc.record({ siteId: fc.constantFrom('ok1', '', 'FZ'), cPk: fc.constant(valid.cPk), sPk: fc.constant(valid.sPk) }),
        fc.anything(),
      ) }).map((p) => Buffer.from(JSON.stringify(p) ?? '')),
      fc.json().map((s) => Buffer.from(s)),
      fc.uint8Array({ maxLength: 100 }).map((b) => Buffer.from(b)),
    );
    const msg = fc.record({
      jobId: fc.oneof(fc.constantFrom(SA_JOB, SA_JOB, SA_JOB, JOB, OTHER_JOB), fc.string({ maxLength: 20 })),
      round: fc.constantFrom(1, 1, 1, 0, 2, 2 ** 32 - 1),
      stage: fc.oneof(fc.constantFrom('advertise', 'advertise', 'advertise', 'share', 'masked', 'unmask', 'status', 'config'), fc.string({ maxLength: 20 })),
      payload,
    });
    const codes = new Set<string>();
    await family('SecAgg advertise stage', msg, async (m) => {
      const { o } = await call(fz.secAgg.bind(fz), m);
      const readOnly = m.jobId === SA_JOB && m.round === 1 && ['status', 'config', 'unmask'].includes(m.stage);
      if (o.kind === 'ok') return void expect(readOnly, `SecAgg OK for ${JSON.stringify(m).slice(0, 300)}`).toBe(true);
      expect(o.kind).toBe('fedlora');
      if (o.kind !== 'fedlora') return;
      codes.add(o.code);
      expect(['FEDLORA_ERR_INVALID_ARGUMENT', 'FEDLORA_ERR_SECAGG', 'FEDLORA_ERR_NOT_FOUND', 'FEDLORA_ERR_ROUND_CLOSED', 'FEDLORA_ERR_CHUNK_ORDER', 'FEDLORA_ERR_CHUNK_SIZE', 'FEDLORA_ERR_CHUNK_HASH'], `${o.code}: ${o.message}`).toContain(o.code);
      expect(o.message).toMatch(/SecAgg|secure aggregation|job|stage|round/i);
    });
    expect(codes.has('FEDLORA_ERR_INVALID_ARGUMENT') && codes.has('FEDLORA_ERR_SECAGG')).toBe(true);
    // regression: garbage keys from one site are refused when sent (they used to be stored and
    // fail the whole round when the advertise stage closed)
    const { o } = await call(fz.secAgg.bind(fz), { jobId: SA_JOB, round: 1, stage: 'advertise', payload: Buffer.from(JSON.stringify({ attempt: 1, msg: { siteId: 'fz', cPk: 'not-a-key', sPk: 'also-not' } })) });
    expectOne(o, [{ code: 'FEDLORA_ERR_INVALID_ARGUMENT', re: /payload\.msg\.cPk and payload\.msg\.sPk must be two different base64url X25519 public keys/ }], 'garbage keys');
  });

  it('SecAggMessage in the share stage: malformed share lists are refused when sent, so they cannot fail the round', async () => {
    // all three sites advertise real keys: the roster closes and the share stage opens
    const cfg = { round: 1, threshold: 2, clipRange: 1, dim: 4 };
    for (const site of ['ok1', 'ok2', 'fz'] as const) {
      const c = fx.clients[site];
      const { o } = await call(c.secAgg.bind(c), { jobId: SA_JOB, round: 1, stage: 'advertise', payload: Buffer.from(JSON.stringify({ attempt: 1, msg: advertiseKeys(site, cfg).msg })) });
      expect(o.kind, site).toBe('ok');
    }
    const st = await call(fz.secAgg.bind(fz), { jobId: SA_JOB, round: 1, stage: 'status', payload: Buffer.alloc(0) });
    expect(JSON.parse(Buffer.from((st.res as { payload: Buffer }).payload).toString())).toMatchObject({ stage: 'share', roster: ['fz', 'ok1', 'ok2'] });
    // (no default parameters: fast-check's undefined must stay undefined)
    const share = (to: unknown, from: unknown, ct: unknown) => ({ from, to, ct });
    const ok = (to: string) => share(to, 'fz', 'Y3Q=');
    const good = [ok('ok1'), ok('ok2')];
    const shares = fc.oneof(
      fc.constant([ok('ok1')]), // a share missing
      fc.constant([ok('ok2')]),
      fc.constant([]),
      fc.constant([...good, ok('ok1')]), // a duplicate
      fc.constant([...good, ok('fz')]), // to itself
      fc.tuple(fc.nat(1), fc.oneof(fc.string({ maxLength: 10 }), fc.anything()).filter((to) => to !== 'ok1' && to !== 'ok2')).map(([i, to]) => good.map((s, k) => (k === i ? share(to, 'fz', 'Y3Q=') : s))), // to an unknown site
      fc.tuple(fc.nat(1), fc.oneof(fc.constantFrom('ok1', 'ok2', ''), fc.anything()).filter((from) => from !== 'fz')).map(([i, from]) => good.map((s, k) => (k === i ? share(s.to, from, 'Y3Q=') : s))), // from another
      fc.tuple(fc.nat(1), fc.oneof(fc.constantFrom('', null, 0, [], {}), fc.anything().filter((x) => typeof x !== 'string'))).map(([i, ct]) => good.map((s, k) => (k === i ? share(s.to, 'fz', ct) : s))),
      fc.tuple(fc.nat(1), fc.constantFrom(null, 0, 'x', [], true)).map(([i, x]) => good.map((s, k) => (k === i ? x : s))), // not an object
      fc.array(fc.anything(), { maxLength: 5 }),
    );
    const payload = fc.oneof(
      { weight: 5, arbitrary: shares.map((sh) => ({ attempt: 1, msg: { siteId: 'fz', shares: sh } })) },
      fc.record({ attempt: fc.constant(1), msg: fc.oneof(fc.record({ siteId: fc.constantFrom('ok1', ''), shares: fc.constant(good) }), fc.record({ siteId: fc.constant('fz'), shares: fc.anything().filter((x) => !Array.isArray(x)) }), fc.anything()) }),
    );
    const codes = new Set<string>();
    await family('SecAgg share stage', payload, async (p) => {
      const { o } = await call(fz.secAgg.bind(fz), { jobId: SA_JOB, round: 1, stage: 'share', payload: Buffer.from(JSON.stringify(p) ?? '') });
      if (o.kind === 'fedlora') codes.add(o.code);
      expectOne(o, [{ code: 'FEDLORA_ERR_INVALID_ARGUMENT', re: /SecAgg share(:| from fz:) payload\.msg/ }], `share ${JSON.stringify(p).slice(0, 200)}`);
    });
    // the round is still in its share stage, with nobody's shares stored
    const after = await call(fz.secAgg.bind(fz), { jobId: SA_JOB, round: 1, stage: 'status', payload: Buffer.alloc(0) });
    expect(JSON.parse(Buffer.from((after.res as { payload: Buffer }).payload).toString())).toMatchObject({ stage: 'share', error: null });
  });

  it('RenewRequest with garbage, foreign or tampered CSRs: FEDLORA_ERR_CSR, no certificate issued', async () => {
    const p256 = async (cn: string) => createCsrPem(await generateKeyPair('ecdsa-p256'), cn);
    const p384 = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, true, ['sign', 'verify'])) as unknown as CryptoKeyPair;
    const mine = await p256('fz');
    const der = Buffer.from(mine.replace(/-----[^-]+-----|\s/g, ''), 'base64');
    der[der.length - 3] ^= 0x55; // inside the signature
    const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    const rsa1024 = (await webcrypto.subtle.generateKey({ name: 'RSASSA-PKCS1-v1_5', modulusLength: 1024, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' }, true, ['sign', 'verify'])) as unknown as CryptoKeyPair;
    // regression: a CSR for fz's own name with a P-384 or RSA-1024 key used to be signed
    for (const [k, what] of [[p384, 'ECDSA P-384'], [rsa1024, 'RSASSA-PKCS1-v1_5 1024-bit']] as const) {
      const { o } = await call(fz.renewCertificate.bind(fz), { csrPem: Buffer.from(await createCsrPem(k, 'fz')) });
      expectOne(o, [{ code: 'FEDLORA_ERR_CSR', re: new RegExp(`csr_pem public key algorithm ${what} not accepted`) }], what);
    }
    const seeds = [await p256('ok1'), await p256('FZ'), await p256(''), await p256('fz\u0000'), tampered, await createCsrPem(p384, 'fz'), await createCsrPem(rsa1024, 'fz'), await exportPrivateKeyPem((await generateKeyPair('ecdsa-p256')).privateKey), `${tampered}${tampered}`.replace(/CERTIFICATE REQUEST/g, 'CERTIFICATE')];
    const csr = fc.oneof(
      fc.constantFrom(...seeds).map((s) => Buffer.from(s)),
      fc.tuple(fc.constantFrom(...seeds), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 7 })), { minLength: 1, maxLength: 4 })).map(([s, flips]) => {
        const b = Buffer.from(s);
        for (const [at, bit] of flips) b[at % b.length] ^= 1 << bit;
        return b;
      }),
      fc.uint8Array({ maxLength: 600 }).map((b) => Buffer.from(b)),
      fc.string({ maxLength: 300 }).map((s) => Buffer.from(`-----BEGIN CERTIFICATE REQUEST-----\n${s}\n-----END CERTIFICATE REQUEST-----\n`)),
    );
    await family('RenewCertificate', csr, async (b) => {
      const { o } = await call(fz.renewCertificate.bind(fz), { csrPem: b });
      expectOne(o, [{ code: 'FEDLORA_ERR_CSR', re: /csr_pem/ }], `RenewCertificate ${b.toString('utf8', 0, 80)}`);
    });
  });

  it('Heartbeat with NaN/Inf/negative throughput and odd strings: answered, no non-finite throughput stored', async () => {
    const store = fx.live.coord.store;
    const throughput = () => (store.db.prepare(`SELECT training_tokens_per_s AS t FROM sites WHERE id = 'fz'`).get() as { t: number | null }).t;
    const before = throughput();
    await family('Heartbeat', fc.record({ trainingTokensPerS: fc.oneof(fc.constantFrom(Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -0, -1), fc.double({ max: -Number.MIN_VALUE })), agentVersion: fc.string({ maxLength: 200 }), state: fc.string({ maxLength: 50 }), currentTaskId: fc.string({ maxLength: 100 }) }), async (q) => {
      const { o, res } = await call(fz.heartbeat.bind(fz), q);
      expect(o.kind).toBe('ok');
      expect(res!.serverTimeUnixMs).toBeGreaterThan(0);
      expect(throughput()).toBe(before);
    });
  });

  it('afterwards a valid upload and a valid metrics report still go in', async () => {
    await stillServes(fx, 'ok2', 'ok2-after-message-fuzz');
    const n = fx.live.coord.store.metrics(JOB).length;
    const { o } = await call(fz.reportMetrics.bind(fz), { taskId: fx.tasks.fz.task_id, jobId: JOB, round: 1, phase: 'eval', metrics: [{ kind: 'global', name: 'loss', value: 1.25, count: 10, modelOwner: '', adapterVersion: 0 }] });
    expect(o.kind).toBe('ok');
    expect(fx.live.coord.store.metrics(JOB).length).toBe(n + 1);
    // and fz's own valid update is accepted: the fuzzing did not lock it out
    const { msgs } = fx.goodStream('fz', 'fz-valid-at-last');
    expect(await submit(fz, msgs)).toMatchObject({ complete: true, sha256: sha256Hex(fx.goodBytes('fz')) });
  });
});
