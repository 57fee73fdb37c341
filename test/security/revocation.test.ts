// Revocation on a live coordinator (mutual TLS on 127.0.0.1): `fedlora site revoke` while a
// round is open marks the site revoked (sites.status, checked on every call),
// discards its in-flight updates (an accepted one and one still streaming), and every later
// call on the SAME open connection is refused PERMISSION_DENIED / FEDLORA_ERR_CERT_REVOKED
// (the CRL is read on every call and on every message of a stream). The round then publishes
// from the remaining site only.
import { describe, it, expect, afterAll } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { unary, type UpdateMessage, type UpdateHeader, type SubmitUpdateResponse } from '../../shared/proto.ts';
import { fromGrpcError } from '../../shared/errors.ts';
import { AuditLog } from '../../shared/audit.ts';
import { decodeSafetensorsF32 } from '../../shared/safetensors.ts';
import { flatten } from '../../shared/tensors.ts';
import { adapterFiles } from '../../coordinator/publish/publisher.ts';
import { revokeSite } from '../../coordinator/enrollment.ts';
import { parseJobSpec } from '../../coordinator/jobs/spec.ts';
import { rawSpec, fakeDelta, encodeDelta } from '../coordinator/helpers.ts';
import { liveCoordinator, nextTask, submit, signFor, updateMessages, sha256Hex, fedlora, type LiveCoordinator } from './helpers.ts';

let live: LiveCoordinator | undefined;
afterAll(async () => live?.cleanup());

const until = async (cond: () => boolean, ms = 10_000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
};

describe('site revocation on a live coordinator', () => {
  it('revoked mid-round: in-flight updates discarded, open connections refused, round aggregates the others', async () => {
    live = await liveCoordinator(['site-a', 'site-b', 'site-c']);
    const { coord, siteDirs, dataDir } = live;
    const cl = { a: live.connect('site-a'), b: live.connect('site-b'), c: live.connect('site-c') };
    for (const c of Object.values(cl)) await unary(c.heartbeat.bind(c), { agentVersion: 't', state: 'idle' });
    const streams = Object.fromEntries(Object.entries(cl).map(([k, c]) => [k, c.streamTasks({})]));
    const taskPs = Object.fromEntries(Object.entries(streams).map(([k, s]) => [k, nextTask(s)]));
    await coord.engine.submitJob(parseJobSpec(rawSpec({ rounds: 1, min_sites: 1, max_sites: 3 })), 'job-rev');
    const tasks = { a: await taskPs.a, b: await taskPs.b, c: await taskPs.c };
    const { layout } = coord.engine.jobInfo('job-rev');
    const signed = (site: 'a' | 'b' | 'c', examples: number) => {
      const bytes = encodeDelta(layout.update, fakeDelta(layout.update, `site-${site}`, 1));
      const f = { updateId: `u-${site}`, jobId: 'job-rev', round: 1, baseVersion: 0, sha256: sha256Hex(bytes), numExamples: examples };
      return { bytes, msgs: updateMessages({ ...f, taskId: tasks[site].taskId, signature: signFor(siteDirs[`site-${site}`], f) }, bytes, 600) };
    };

    // site-a's update is accepted (the round stays open: b and c have not answered)
    expect(await submit(cl.a, signed('a', 11).msgs)).toMatchObject({ complete: true });
    expect(coord.store.update('u-a')!.status).toBe('accepted');
    // site-c is half-way through its upload on an open stream
    const c = signed('c', 13);
    expect(c.msgs.length).toBeGreaterThan(3);
    let cResult: Promise<SubmitUpdateResponse>;
    const cCall = (() => {
      let call!: grpc.ClientWritableStream<UpdateMessage>;
      cResult = new Promise((resolve, reject) => {
        call = cl.c.submitUpdate(new grpc.Metadata(), {}, (err, res) => (err ? reject(Object.assign(fromGrpcError(err), { grpcCode: err.code })) : resolve(res!)));
      });
      return call;
    })();
    cCall.write(c.msgs[0]);
    cCall.write(c.msgs[1]);
    // (its first chunk is on disk; the progress is recorded with the next group commit)
    await until(() => {
      const row = coord.store.update('u-c');
      return !!row && existsSync(row.path) && statSync(row.path).size >= 600;
    });
    expect(cl.a.getChannel().getConnectivityState(false)).toBe(grpc.connectivityState.READY);

    // the operator revokes site-a with the CLI (another process, same SQLite file) and site-c in-process
    const cli = await fedlora(['site', 'revoke', 'site-a', '--data-dir', dataDir, '--reason', 'key stolen']);
    expect(cli.stderr).toBe('');
    expect(cli.status).toBe(0);
    expect(cli.stdout).toMatch(/site site-a revoked; 1 certificate\(s\) on the CRL/);
    expect(revokeSite(coord.store.db, 'site-c', 'left the consortium').discardedUpdates).toEqual(['u-c']);

    // both tables agree; the in-flight updates are discarded, their tasks no longer wait
    expect(coord.store.site('site-a')!.status).toBe('revoked');
    expect(coord.store.site('site-c')!.status).toBe('revoked');
    expect(coord.store.update('u-a')).toMatchObject({ status: 'discarded' });
    expect(coord.store.update('u-a')!.reason).toMatch(/site site-a revoked: key stolen/);
    expect(coord.store.update('u-c')!.status).toBe('discarded');
    expect(coord.store.task(tasks.a.taskId)!.status).toBe('cancelled');

    // the SAME connection, next call: refused because the certificate is on the CRL
    expect(cl.a.getChannel().getConnectivityState(false)).toBe(grpc.connectivityState.READY);
    const hb = await unary(cl.a.heartbeat.bind(cl.a), { state: 'idle' }).then(() => null, (e: grpc.ServiceError) => e);
    expect(hb).not.toBeNull();
    expect(hb!.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(fromGrpcError(hb!).code).toBe('FEDLORA_ERR_CERT_REVOKED');
    // a new submission from site-a on that connection
    const again = signed('a', 11);
    const a2 = again.msgs[0] as { header: UpdateHeader };
    await expect(submit(cl.a, [{ part: 'header', header: { ...a2.header, updateId: 'u-a-2' } } as UpdateMessage])).rejects.toMatchObject({ code: 'FEDLORA_ERR_CERT_REVOKED', grpcCode: grpc.status.PERMISSION_DENIED });
    // site-c's open stream: its next chunk is refused
    for (const m of c.msgs.slice(2)) cCall.write(m);
    cCall.end();
    await expect(cResult!).rejects.toMatchObject({ code: 'FEDLORA_ERR_CERT_REVOKED', grpcCode: grpc.status.PERMISSION_DENIED });
    expect(coord.store.update('u-c')!.status).toBe('discarded');

    // site-b finishes the round; version 1 = version 0 + b's delta only (a's and c's never counted)
    const b = signed('b', 5);
    expect(await submit(cl.b, b.msgs)).toMatchObject({ complete: true });
    const job = await coord.engine.waitForJob('job-rev', 20_000);
    expect(job).toMatchObject({ status: 'completed', current_version: 1 });
    const v1row = coord.store.adapterVersion('job-rev', 1)!;
    expect(JSON.parse(v1row.manifest_json)).toMatchObject({ contributing_sites: 1, num_examples: 5 });
    const v0 = flatten(decodeSafetensorsF32(readFileSync(adapterFiles(coord.store.adapterVersion('job-rev', 0)!).model)).tensors, layout.full);
    const v1 = flatten(decodeSafetensorsF32(readFileSync(adapterFiles(v1row).model)).tensors, layout.full);
    const db = fakeDelta(layout.update, 'site-b', 1);
    for (const e of layout.update.entries) {
      const fe2 = layout.full.entries.find((x) => x.name === e.name)!;
      for (let i = 0; i < e.length; i += 7) expect(v1[fe2.offset + i]).toBeCloseTo(v0[fe2.offset + i] + db[e.offset + i], 5);
    }

    // audited: the revocations (with what they discarded) and the refused calls
    const audit = new AuditLog(coord.store.db);
    expect(audit.list({ action: 'revoke' }).map((e) => [e.subject, e.details.reason, e.details.discarded_updates])).toEqual([
      ['site-a', 'key stolen', ['u-a']], ['site-c', 'left the consortium', ['u-c']],
    ]);
    const refused = audit.list({ action: 'call_refused' });
    expect(refused.length).toBeGreaterThanOrEqual(2);
    expect(refused.every((e) => e.details.code === 'FEDLORA_ERR_CERT_REVOKED')).toBe(true);
    expect(refused.some((e) => String(e.subject).includes('site-a'))).toBe(true);
    expect(audit.list({ action: 'aggregate' })[0].details.updates).toEqual([{ update_id: 'u-b', site: 'site-b', sha256: sha256Hex(b.bytes), examples: 5 }]);
    expect(audit.verify().ok).toBe(true);
    for (const s of Object.values(streams)) s.cancel();
  });
});
