// Upload throughput through the production path: a real coordinator (store, round engine,
// Federation gRPC over mutual TLS 1.3, certificates made at run time) receives a signed 160 MB
// update (40M float32 parameters in the job's layout) into its intake — per-chunk sha256, group
// commit (fsync, then progress in SQLite), whole-payload sha256, signature and content checks,
// accepted and committed before the answer. The site is a separate process running the
// product's uploader (shared/transfer/upload.ts uploadFile, as the site agent calls it).
// Reference, measured in the same run with the same topology: the same number of bytes from a
// child process over a raw mutual-TLS 1.3 socket into this process.
// A third figure places the gap: the same upload into a SubmitUpdate handler that only drains
// the stream (gRPC and TLS alone, no intake). Peak memory: the receiving process's RSS growth
// during the transfer (kernel high-water mark) and the site process's peak RSS.
import { spawn } from 'node:child_process';
import * as grpc from '@grpc/grpc-js';
import { createHash } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { connect, createServer } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import type { BenchRow } from './run.ts';
import { startUploadRig, type RigSite } from '../wire/upload-fixture.ts';
import { encodeDelta, fakeDelta } from '../coordinator/helpers.ts';
import { signUpdate, type SignedUpdateFields } from '../../shared/update-signature.ts';
import type { AdapterLayout } from '../../shared/tensors.ts';
import { readServerPki } from '../../certs/ca.ts';
import { pkiDirOf } from '../../coordinator/enrollment.ts';
import { createFederationClient, federationService, SERVER_OPTIONS, type UpdateMessage } from '../../shared/proto.ts';
import { createFederationServerCredentials, createSiteChannelCredentials, sitePaths } from '../../shared/tls.ts';
import { uploadFile, type UploadHeaderInput } from '../../shared/transfer/upload.ts';
import { MiB } from '../../shared/transfer/chunks.ts';
import { widenConnectionWindow } from '../../shared/http2-window.ts';

const MODEL = { hidden: 4096, layers: 38, r: 64 }; // q,v LoRA: 4·r·hidden·layers = 39.8M parameters
const TARGET_MBS = 300;

interface Child { seconds: number; peakRss: number; cpuSeconds: number }
type ChildJob =
  | { kind: 'make-update'; layout: AdapterLayout; siteId: string; siteDir: string; file: string; fields: SignedUpdateFields }
  | { kind: 'upload'; endpoint: string; siteDir: string; file: string; header: Omit<UploadHeaderInput, 'signature'> & { signature: string }; chunkSize: number }
  | { kind: 'tls'; port: number; siteDir: string; bytes: number };

/** Child mode: the site. Prints {seconds, peakRss, cpuSeconds} as JSON (make-update: the
 *  update's sha256 and signature, written where the site keeps it, before any timing). */
async function child(job: ChildJob): Promise<void> {
  if (job.kind === 'make-update') {
    const bytes = encodeDelta(job.layout, fakeDelta(job.layout, job.siteId, 1));
    writeFileSync(job.file, bytes);
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    const signature = signUpdate(readFileSync(sitePaths(job.siteDir).key), { ...job.fields, sha256 }).toString('base64');
    process.stdout.write(JSON.stringify({ sha256, signature, size: bytes.length }) + '\n');
    return;
  }
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  if (job.kind === 'upload') {
    const client = createFederationClient(job.endpoint, createSiteChannelCredentials(job.siteDir));
    const res = await uploadFile(client, { ...job.header, signature: Buffer.from(job.header.signature, 'base64') }, job.file, { chunkSize: job.chunkSize, resume: true, attempts: 5 });
    if (!res.complete) throw new Error('upload did not complete');
    client.close();
  } else {
    const p = sitePaths(job.siteDir);
    const sock = connect({ host: '127.0.0.1', port: job.port, ca: readFileSync(p.ca), cert: readFileSync(p.cert), key: readFileSync(p.key), servername: 'localhost', minVersion: 'TLSv1.3', checkServerIdentity: () => undefined });
    await new Promise<void>((r) => sock.once('secureConnect', () => r()));
    const block = Buffer.alloc(4 * MiB, 7);
    for (let sent = 0; sent < job.bytes; sent += block.length) {
      if (!sock.write(block.subarray(0, Math.min(block.length, job.bytes - sent)))) await new Promise((r) => sock.once('drain', r));
    }
    await new Promise((r) => sock.once('data', r)); // the receiver's "all bytes in"
    sock.destroy();
  }
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  process.stdout.write(JSON.stringify({ seconds, peakRss: process.resourceUsage().maxRSS * 1024, cpuSeconds: (cpu.user + cpu.system) / 1e6 }) + '\n');
}

function runChild<T = Child>(job: ChildJob): Promise<T> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', JSON.stringify(job)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out.trim().split('\n').pop()!)) : reject(new Error(`site process (${job.kind}) exited ${code}: ${err.trim().split('\n').slice(-5).join(' | ')}`))));
  });
}

// A full GC before each measured transfer, so garbage of the set-up is not collected inside it.
v8.setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const statusKb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? NaN) * 1024;

/** Peak RSS growth of this process while `fn` runs: the kernel's high-water mark (VmHWM),
 *  reset first through /proc/self/clear_refs (Linux), so nothing is sampled or missed. */
async function withPeakRss<T>(fn: () => Promise<T>): Promise<{ value: T; peakRssDelta: number; cpuSeconds: number }> {
  gc();
  writeFileSync('/proc/self/clear_refs', '5');
  const base = statusKb('VmRSS');
  const cpu0 = process.cpuUsage();
  const value = await fn();
  const cpu = process.cpuUsage(cpu0);
  return { value, peakRssDelta: statusKb('VmHWM') - base, cpuSeconds: (cpu.user + cpu.system) / 1e6 };
}

/** A raw mutual-TLS 1.3 socket with the coordinator's certificate; acknowledges `total` bytes. */
async function rawTlsServer(dataDir: string, total: () => number): Promise<{ port: number; close(): void }> {
  const pki = readServerPki(pkiDirOf(dataDir));
  const server = createServer({ ca: pki.caPem, cert: pki.certPem, key: pki.keyPem, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' }, (s) => {
    let received = 0;
    s.on('data', (b: Buffer) => {
      received += b.length;
      if (received >= total()) s.write('k');
    });
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as AddressInfo).port, close: () => server.close() };
}

/** The transport alone: the same Federation credentials and server options, a SubmitUpdate
 *  that only drains the stream (no intake), to show what gRPC itself costs. */
async function drainOnlyServer(dataDir: string): Promise<{ endpoint: string; close(): void }> {
  const server = new grpc.Server(SERVER_OPTIONS);
  server.addService(federationService(), {
    getUploadStatus: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, { known: false, receivedChunks: 0, receivedBytes: 0, complete: false }),
    submitUpdate: (call: AsyncIterable<UpdateMessage>, cb: grpc.sendUnaryData<unknown>) => {
      void (async () => {
        let id = '';
        let bytes = 0;
        let chunks = 0;
        for await (const m of call) {
          if (m.part === 'header' && 'header' in m) id = m.header.updateId;
          if (m.part === 'chunk' && 'chunk' in m) (bytes += m.chunk.data.length), chunks++;
        }
        cb(null, { updateId: id, receivedBytes: bytes, receivedChunks: chunks, complete: true, sha256: '' });
      })();
    },
  } as unknown as grpc.UntypedServiceImplementation);
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', createFederationServerCredentials(readServerPki(pkiDirOf(dataDir))), (e, p) => (e ? reject(e) : resolve(p))));
  widenConnectionWindow(server);
  return { endpoint: `127.0.0.1:${port}`, close: () => server.forceShutdown() };
}

const MB = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;

export async function run(): Promise<BenchRow[]> {
  const chunkSizes = [2 * MiB, 4 * MiB];
  const reps = process.env.FEDLORA_BENCH_QUICK === '1' ? 1 : 2;
  // one site more than uploads: the round stays open (no aggregation runs during the measurements)
  const rig = await startUploadRig({ sites: chunkSizes.length * reps + 1, model: MODEL, config: { transfer: { max_update_bytes: 1024 * MiB } } });
  try {
    const rows: BenchRow[] = [];
    let site = 0;
    let size = 0;
    const { layout } = rig.coord.engine.jobInfo(rig.jobId);
    const makeUpdate = async (s: RigSite, updateId: string) => {
      const file = join(rig.work, `${updateId}.safetensors.bin`);
      const fields = { updateId, jobId: rig.jobId, round: 1, baseVersion: 0, numExamples: 10 };
      const m = await runChild<{ sha256: string; signature: string; size: number }>({ kind: 'make-update', layout: layout.update, siteId: s.id, siteDir: s.dir, file, fields: { ...fields, sha256: '' } });
      return { file, size: m.size, header: { ...fields, taskId: s.taskId, payloadKind: 'delta', sha256: m.sha256, signature: m.signature } };
    };
    const tls = await rawTlsServer(rig.dataDir, () => size);
    const drain = await drainOnlyServer(rig.dataDir);
    try {
      for (const chunkSize of chunkSizes) {
        type Best = { run: Child; rss: number; cpu: number };
        const keep = (b: Best | undefined, x: Best) => (!b || x.run.seconds < b.run.seconds ? x : b);
        let intake: Best | undefined;
        let transport: Best | undefined;
        let ref: Best | undefined;
        for (let r = 0; r < reps; r++, site++) {
          // the three in turn, each one's best kept: the machine is shared
          const s = rig.sites[site];
          const u = await makeUpdate(s, `bench-${site}`);
          size = u.size;
          const t = await withPeakRss(() => runChild({ kind: 'tls', port: tls.port, siteDir: s.dir, bytes: size }));
          ref = keep(ref, { run: t.value, rss: t.peakRssDelta, cpu: t.cpuSeconds });
          const g = await withPeakRss(() => runChild({ kind: 'upload', endpoint: drain.endpoint, siteDir: s.dir, file: u.file, chunkSize, header: u.header }));
          transport = keep(transport, { run: g.value, rss: g.peakRssDelta, cpu: g.cpuSeconds });
          const i = await withPeakRss(() => runChild({ kind: 'upload', endpoint: rig.coord.federationEndpoint, siteDir: s.dir, file: u.file, chunkSize, header: u.header }));
          const row = rig.coord.store.update(`bench-${site}`);
          if (row?.status !== 'accepted') throw new Error(`bench upload ${site}: update is ${row?.status}`);
          rmSync(u.file);
          intake = keep(intake, { run: i.value, rss: i.peakRssDelta, cpu: i.cpuSeconds });
          if (process.env.FEDLORA_BENCH_VERBOSE) process.stderr.write(`upload ${chunkSize / MiB} MiB chunks, rep ${r}: intake ${i.value.seconds.toFixed(2)} s, gRPC drain-only ${g.value.seconds.toFixed(2)} s, raw TLS ${t.value.seconds.toFixed(2)} s\n`);
        }
        const mbs = (b: Best) => size / 1e6 / b.run.seconds;
        const cost = (b: Best) => `peak RSS receiver +${MB(b.rss)}, site ${MB(b.run.peakRss)}; CPU s receiver ${b.cpu.toFixed(2)}, site ${b.run.cpuSeconds.toFixed(2)}`;
        rows.push({
          bench: `upload ${(size / 1e6).toFixed(0)} MB, ${chunkSize / MiB} MiB chunks (mTLS gRPC into the intake)`, metric: 'MB/s',
          ours: mbs(intake!), reference: mbs(ref!), referenceName: 'raw mTLS 1.3 socket', target: { value: TARGET_MBS, what: 'absolute' }, note: cost(intake!),
        });
        rows.push({
          bench: `  same, into a drain-only gRPC handler (transport alone)`, metric: 'MB/s',
          ours: mbs(transport!), reference: mbs(ref!), referenceName: 'raw mTLS 1.3 socket', note: cost(transport!),
        });
      }
    } finally {
      tls.close();
      drain.close();
    }
    return rows;
  } finally {
    await rig.close();
    rmSync(rig.work, { recursive: true, force: true });
  }
}

if (process.argv.includes('--child')) await child(JSON.parse(process.argv[process.argv.indexOf('--child') + 1]));
