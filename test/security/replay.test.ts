// Signatures and replay on the real wire (mutual TLS on 127.0.0.1): a site's signed update is
// captured in round 1 and presented again in round 2 — under the same update id, under a fresh
// update id, with tampered bytes — and every replay is refused (FEDLORA_ERR_REPLAY /
// FEDLORA_ERR_SIGNATURE), audited, and never aggregated; an unsigned update is refused; the
// coordinator stores the signature it verified; the genuine round-2 update goes through.
import { describe, it, expect, afterAll } from 'vitest';
import { unary, type UpdateMessage, type UpdateHeader } from '../../shared/proto.ts';
import { AuditLog } from '../../shared/audit.ts';
import { rawSpec, fakeDelta, encodeDelta } from '../coordinator/helpers.ts';
import { parseJobSpec } from '../../coordinator/jobs/spec.ts';
import { liveCoordinator, nextTask, submit, signFor, updateMessages, sha256Hex, type LiveCoordinator } from './helpers.ts';

let live: LiveCoordinator | undefined;
afterAll(async () => live?.cleanup());

describe('update signatures and replays over gRPC mTLS', () => {
  it('refuses every replay of a captured update in the next round, audits it, aggregates only genuine updates', async () => {
    live = await liveCoordinator(['site-a']);
    const { coord, siteDirs } = live;
    const client = live.connect('site-a');
    await unary(client.heartbeat.bind(client), { agentVersion: 't', state: 'idle' });
    const stream = client.streamTasks({ agentVersion: 't', maxParallelTasks: 1 });
    let taskP = nextTask(stream);
    await coord.engine.submitJob(parseJobSpec(rawSpec({ rounds: 2, min_sites: 1, max_sites: 1 })), 'job-replay');
    const t1 = await taskP;
    expect(t1).toMatchObject({ round: 1, globalAdapter: { version: 0 } });
    const { layout } = coord.engine.jobInfo('job-replay');

    // round 1: the genuine update (this is what an eavesdropper or a malicious relay captures)
    const bytes1 = encodeDelta(layout.update, fakeDelta(layout.update, 'site-a', 1));
    const f1 = { updateId: 'u-a-r1', jobId: 'job-replay', round: 1, baseVersion: 0, sha256: sha256Hex(bytes1), numExamples: 10 };
    const sig1 = signFor(siteDirs['site-a'], f1);
    const captured = updateMessages({ ...f1, taskId: t1.taskId, signature: sig1, updateNorm: 2.5, clipped: false }, bytes1, 700);
    taskP = nextTask(stream);
    expect(await submit(client, captured)).toMatchObject({ complete: true, sha256: f1.sha256 });
    // the coordinator keeps the signature it verified
    expect(Buffer.compare(coord.store.update('u-a-r1')!.signature!, sig1)).toBe(0);
    const t2 = await taskP; // version 1 published, round 2 opened
    expect(t2).toMatchObject({ round: 2, globalAdapter: { version: 1 } });

    const hdr = (captured[0] as { header: UpdateHeader }).header;
    const withHeader = (over: Record<string, unknown>, body = captured.slice(1)) => [{ part: 'header', header: { ...hdr, ...over } } as UpdateMessage, ...body];

    // 1. the captured stream verbatim, re-addressed to round 2's task: same update id -> REPLAY
    await expect(submit(client, withHeader({ taskId: t2.taskId, round: 2, baseVersion: 1 }))).rejects.toMatchObject({ code: 'FEDLORA_ERR_REPLAY' });
    // 2. same bytes + signature under a fresh update id -> the signature was already used -> REPLAY
    await expect(submit(client, withHeader({ updateId: 'u-fresh-1', taskId: t2.taskId, round: 2, baseVersion: 1 }))).rejects.toMatchObject({ code: 'FEDLORA_ERR_REPLAY' });
    // 3. the same, but the signature bytes altered (so it is "new"): does not verify -> SIGNATURE
    const bent = Buffer.from(sig1);
    bent[bent.length - 1] ^= 1;
    await expect(submit(client, withHeader({ updateId: 'u-fresh-2', taskId: t2.taskId, round: 2, baseVersion: 1, signature: bent }))).rejects.toMatchObject({ code: 'FEDLORA_ERR_SIGNATURE' });
    // 4. tampered payload (one byte flipped, hashes recomputed) with a signature over the genuine round-2 fields of ANOTHER payload -> SIGNATURE
    const tampered = Buffer.from(bytes1);
    tampered[tampered.length - 5] ^= 0x40;
    const fT = { updateId: 'u-fresh-3', jobId: 'job-replay', round: 2, baseVersion: 1, sha256: f1.sha256, numExamples: 10 }; // signed the ORIGINAL hash
    await expect(submit(client, updateMessages({ ...fT, taskId: t2.taskId, signature: signFor(siteDirs['site-a'], fT) }, tampered, 700))).rejects.toMatchObject({ code: 'FEDLORA_ERR_SIGNATURE' });
    // 5. no signature at all (required by default) -> SIGNATURE
    await expect(submit(client, withHeader({ updateId: 'u-fresh-4', taskId: t2.taskId, round: 2, baseVersion: 1, signature: Buffer.alloc(0) }))).rejects.toMatchObject({ code: 'FEDLORA_ERR_SIGNATURE' });
    // none of them stored a byte: REPLAYs left no row, SIGNATURE failures a 'rejected' record
    expect(coord.store.roundUpdates('job-replay', 2, 1).map((u) => [u.update_id, u.status, u.received_bytes])).toEqual([
      ['u-fresh-2', 'rejected', 0], ['u-fresh-3', 'rejected', 0], ['u-fresh-4', 'rejected', 0],
    ]);
    // a rejected update id stays refused even with a correct signature
    const f4 = { updateId: 'u-fresh-4', jobId: 'job-replay', round: 2, baseVersion: 1, sha256: f1.sha256, numExamples: 10 };
    await expect(submit(client, withHeader({ ...f4, taskId: t2.taskId, signature: signFor(siteDirs['site-a'], f4) }))).rejects.toMatchObject({ code: 'FEDLORA_ERR_UPDATE_INVALID' });
    expect(coord.store.currentRound('job-replay')).toMatchObject({ round: 2, state: 'open' });

    // the genuine round-2 update goes through and only it is aggregated into version 2
    const bytes2 = encodeDelta(layout.update, fakeDelta(layout.update, 'site-a', 2));
    const f2 = { updateId: 'u-a-r2', jobId: 'job-replay', round: 2, baseVersion: 1, sha256: sha256Hex(bytes2), numExamples: 7 };
    expect(await submit(client, updateMessages({ ...f2, taskId: t2.taskId, signature: signFor(siteDirs['site-a'], f2) }, bytes2, 700))).toMatchObject({ complete: true });
    const job = await coord.engine.waitForJob('job-replay', 20_000);
    expect(job).toMatchObject({ status: 'completed', current_version: 2 });
    expect(JSON.parse(coord.store.adapterVersion('job-replay', 2)!.manifest_json)).toMatchObject({ contributing_sites: 1, num_examples: 7 });
    expect(coord.store.roundUpdates('job-replay', 2, 1, 'accepted').map((u) => u.update_id)).toEqual(['u-a-r2']);

    // the audit log tells the story, and its chain is intact
    const audit = new AuditLog(coord.store.db);
    const rejected = audit.list({ action: 'update_rejected' });
    expect(rejected.map((e) => [e.subject, e.details.code])).toEqual([
      ['u-a-r1', 'FEDLORA_ERR_REPLAY'], ['u-fresh-1', 'FEDLORA_ERR_REPLAY'], ['u-fresh-2', 'FEDLORA_ERR_SIGNATURE'], ['u-fresh-3', 'FEDLORA_ERR_SIGNATURE'], ['u-fresh-4', 'FEDLORA_ERR_SIGNATURE'], ['u-fresh-4', 'FEDLORA_ERR_UPDATE_INVALID'],
    ]);
    expect(rejected.every((e) => e.actor === 'site-a' && e.details.round === 2)).toBe(true);
    const received = audit.list({ action: 'update_received' });
    expect(received.map((e) => e.subject)).toEqual(['u-a-r1', 'u-a-r2']);
    expect(received[0].details).toMatchObject({ job: 'job-replay', round: 1, sha256: f1.sha256, size: bytes1.length, examples: 10, site_norm: 2.5, site_clipped: false, signature_sha256: sha256Hex(sig1) });
    // the coordinator's own measurement of the L2 norm of what it received
    let s2 = 0;
    for (const x of fakeDelta(layout.update, 'site-a', 1)) s2 += x * x;
    expect(received[0].details.coordinator_norm as number).toBeCloseTo(Math.sqrt(s2), 3);
    const aggs = audit.list({ action: 'aggregate' });
    expect(aggs.map((e) => (e.details.updates as { update_id: string }[]).map((u) => u.update_id))).toEqual([['u-a-r1'], ['u-a-r2']]);
    expect(audit.list({ action: 'publish' }).map((e) => [e.details.version, e.details.sha256])).toEqual(
      [0, 1, 2].map((v) => [v, coord.store.adapterVersion('job-replay', v)!.sha256]));
    expect(audit.list({ action: 'task' }).map((e) => e.subject)).toEqual([t1.taskId, t2.taskId]);
    expect(audit.verify()).toMatchObject({ ok: true, firstBroken: null });
    stream.cancel();
  });
});
