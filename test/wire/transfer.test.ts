// FetchAdapter downloads over real mutual-TLS gRPC: per-chunk verification, resume of a cut
// download from its offset, a wrong whole sha256 deletes the file. (Uploads: submit-update.test.ts.)
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { enrollSite } from '../../site-agent/enroll.ts';
import { issueJoinToken } from '../../coordinator/enrollment.ts';
import { authenticateCall } from '../../coordinator/auth.ts';
import { fromGrpcError } from '../../shared/errors.ts';
import { createFederationClient, type FederationClient } from '../../shared/proto.ts';
import { createSiteChannelCredentials } from '../../shared/tls.ts';
import { downloadAdapter, streamFile } from '../../shared/transfer/download.ts';
import { MiB } from '../../shared/transfer/chunks.ts';
import { sha256File } from '../../shared/hash.ts';
import { startCoordinator, tempDir, type TestCoordinator } from './helpers.ts';

let coord: TestCoordinator;
let client: FederationClient;
let work: string;
let adapterFile: string;
let adapterSha = '';

beforeAll(async () => {
  coord = await startCoordinator(({ auth }) => {
    const who = (call: { getAuthContext(): unknown }) => authenticateCall(call as never, auth).siteId;
    return {
      fetchAdapter: (call) => {
        try {
          who(call);
        } catch (e) {
          call.emit('error', { code: grpc.status.PERMISSION_DENIED, details: String(e) });
          return;
        }
        void streamFile(call, { ref: { jobId: call.request.jobId, version: call.request.version, sha256: adapterSha, sizeBytes: 0, manifestSha256: '' }, chunkSize: MiB }, adapterFile, call.request.offset);
      },
    };
  });
  work = tempDir('transfer');
  const { token } = issueJoinToken(coord.db, { siteId: 'site-up', ttlMs: 60_000, enrollEndpoint: coord.enrollEndpoint, caSha256: coord.ca.sha256 });
  const siteDir = join(work, 'site');
  await enrollSite({ token, siteDir });
  client = createFederationClient(coord.federationEndpoint, createSiteChannelCredentials(siteDir));
  adapterFile = join(work, 'adapter.safetensors.bin');
  writeFileSync(adapterFile, randomBytes(3 * MiB + 12345));
  adapterSha = await sha256File(adapterFile);
});

afterAll(async () => {
  client?.close();
  await coord.close();
  rmSync(work, { recursive: true, force: true });
});

async function rejected(p: Promise<unknown>): Promise<{ code: string; message: string; grpc?: number }> {
  const e = await p.then(() => null, (x) => x);
  expect(e, 'expected a rejection').not.toBeNull();
  const fe = e.code && typeof e.code === 'string' ? e : fromGrpcError(e);
  return { code: fe.code, message: fe.message, grpc: typeof e.code === 'number' ? e.code : undefined };
}

describe('FetchAdapter', () => {
  it('downloads with per-chunk verification and resumes a cut download from its offset', async () => {
    const out = join(work, 'dl.bin');
    const e = await rejected(downloadAdapter(client, { jobId: 'job1', version: 1 }, out, { onChunk: (i) => (i === 1 ? 'cut' : undefined) }));
    expect(e.code).toBe('FEDLORA_ERR_UNAVAILABLE');
    expect(statSync(`${out}.part`).size).toBe(2 * MiB);
    const r = await downloadAdapter(client, { jobId: 'job1', version: 1 }, out);
    expect(r.resumedFrom).toBe(2 * MiB);
    expect(r.sha256).toBe(adapterSha);
    expect(await sha256File(out)).toBe(adapterSha);
    expect(existsSync(`${out}.part`)).toBe(false);
  });

  it('a download that does not match the expected sha256 is deleted', async () => {
    const out = join(work, 'dl2.bin');
    const e = await rejected(downloadAdapter(client, { jobId: 'job1', version: 1 }, out, { sha256: 'b'.repeat(64) }));
    expect(e.code).toBe('FEDLORA_ERR_UPDATE_HASH');
    expect(existsSync(out) || existsSync(`${out}.part`)).toBe(false);
  });
});
