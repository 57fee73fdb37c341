// Upload throughput: a 160 MB adapter through SubmitUpdate over mutual-TLS gRPC on loopback
// (chunking, per-chunk sha256, fsync + SQLite progress per chunk, final sha256 pass), against
// the raw TLS 1.3 socket throughput on loopback measured in the same run with the same keys.
import { writeFileSync, readFileSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { connect, createServer } from 'node:tls';
import type { AddressInfo } from 'node:net';
import type { BenchRow } from './run.ts';
import { startCoordinator, tempDir } from '../wire/helpers.ts';
import { authenticateCall } from '../../coordinator/auth.ts';
import { issueJoinToken, pkiDirOf } from '../../coordinator/enrollment.ts';
import { readServerPki } from '../../certs/ca.ts';
import { enrollSite } from '../../site-agent/enroll.ts';
import { createFederationClient } from '../../shared/proto.ts';
import { createSiteChannelCredentials, sitePaths } from '../../shared/tls.ts';
import { UploadReceiver, submitUpdateHandler, uploadStatusHandler } from '../../shared/transfer/receiver.ts';
import { uploadFile } from '../../shared/transfer/upload.ts';
import { MiB } from '../../shared/transfer/chunks.ts';

const TOTAL = 160 * 1000 * 1000;

async function rawTls(pki: { caPem: string; certPem: string; keyPem: string }, siteDir: string): Promise<number> {
  const p = sitePaths(siteDir);
  let received = 0;
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  const server = createServer({ ca: pki.caPem, cert: pki.certPem, key: pki.keyPem, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' }, (s) => {
    s.on('data', (b: Buffer) => {
      received += b.length;
      if (received >= TOTAL) done();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  const sock = connect({ host: '127.0.0.1', port, ca: readFileSync(p.ca), cert: readFileSync(p.cert), key: readFileSync(p.key), minVersion: 'TLSv1.3' });
  await new Promise<void>((r) => sock.once('secureConnect', () => r()));
  const block = randomBytes(2 * MiB);
  const t0 = performance.now();
  for (let sent = 0; sent < TOTAL; ) {
    const n = Math.min(block.length, TOTAL - sent);
    if (!sock.write(block.subarray(0, n))) await new Promise((r) => sock.once('drain', r));
    sent += n;
  }
  await finished;
  const s = (performance.now() - t0) / 1000;
  sock.destroy();
  server.close();
  return TOTAL / 1e6 / s;
}

export async function run(): Promise<BenchRow[]> {
  let receiver!: UploadReceiver;
  const coord = await startCoordinator(({ db, auth, dataDir }) => {
    receiver = new UploadReceiver({ db, spoolDir: join(dataDir, 'spool'), finalDir: join(dataDir, 'complete') });
    const who = (call: { getAuthContext(): unknown }) => authenticateCall(call as never, auth).siteId;
    return { submitUpdate: submitUpdateHandler(receiver, who), getUploadStatus: uploadStatusHandler(receiver, who) };
  });
  const work = tempDir('bench-upload');
  try {
    const siteDir = join(work, 'site');
    const { token } = issueJoinToken(coord.db, { siteId: 'bench', ttlMs: 60_000, enrollEndpoint: coord.enrollEndpoint, caSha256: coord.ca.sha256 });
    await enrollSite({ token, siteDir });
    const file = join(work, 'adapter.bin');
    writeFileSync(file, randomBytes(TOTAL));
    const client = createFederationClient(coord.federationEndpoint, createSiteChannelCredentials(siteDir));
    const rows: BenchRow[] = [];
    const ref = await rawTls(readServerPki(pkiDirOf(coord.dataDir)) as { caPem: string; certPem: string; keyPem: string }, siteDir);
    for (const chunk of [1, 4]) {
      const t0 = performance.now();
      const res = await uploadFile(client, { updateId: `bench-${chunk}`, jobId: 'bench' }, file, { chunkSize: chunk * MiB });
      const s = (performance.now() - t0) / 1000;
      if (!res.complete) throw new Error('upload did not complete');
      rows.push({ bench: `upload 160 MB, ${chunk} MiB chunks (mTLS gRPC, fsync/chunk)`, metric: 'MB/s', ours: TOTAL / 1e6 / s, reference: ref, referenceName: 'raw TLS 1.3 socket', note: 'ours: sha256 pre-pass + per-chunk sha256/fsync/SQLite + whole-hash check' });
    }
    client.close();
    return rows;
  } finally {
    await coord.close();
    rmSync(work, { recursive: true, force: true });
  }
}
