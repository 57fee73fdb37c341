// The UploadReceiver across a coordinator restart: progress recorded in SQLite survives, bytes
// written after the last recorded chunk (a crash between write and record) are cut, and a
// resend of an already persisted chunk is skipped.
import { afterAll, describe, expect, it } from 'vitest';
import { appendFileSync, readFileSync, rmSync, statSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { UploadReceiver } from '../../shared/transfer/receiver.ts';
import { MiB, sha256Hex } from '../../shared/transfer/chunks.ts';
import type { UpdateHeader, UpdateMessage } from '../../shared/proto.ts';
import { tempDir } from './helpers.ts';

const work = tempDir('receiver');
afterAll(() => rmSync(work, { recursive: true, force: true }));

const payload = randomBytes(3 * MiB + 100);
const header = (resumeFromChunk: number): UpdateHeader => ({
  updateId: 'r1', taskId: 't', jobId: 'j', round: 2, baseVersion: 1, totalBytes: payload.length, sha256: sha256Hex(payload), chunkSize: MiB,
  numExamples: 1, payloadKind: 'delta', signature: Buffer.alloc(0), resumeFromChunk, updateNorm: 0, clipped: false, metadataJson: Buffer.from('{"a":1}'),
});
const chunk = (i: number): UpdateMessage => {
  const data = payload.subarray(i * MiB, Math.min(payload.length, (i + 1) * MiB));
  return { chunk: { index: i, offset: i * MiB, data, sha256: sha256Hex(data) } };
};

async function* messages(list: UpdateMessage[], thenBreak = false): AsyncIterable<UpdateMessage> {
  for (const m of list) yield m;
  if (thenBreak) throw new Error('connection reset');
}

function open() {
  const db = new Database(join(work, 'c.sqlite'));
  const seen: string[] = [];
  const r = new UploadReceiver({ db, spoolDir: join(work, 'spool'), finalDir: join(work, 'final'), onComplete: (u) => void seen.push(u.header.updateId) });
  return { db, r, seen };
}

describe('UploadReceiver persistence', () => {
  it('resumes after a restart, cuts unrecorded bytes and skips resent chunks', async () => {
    const a = open();
    await expect(a.r.receive('s1', messages([{ header: header(0) }, chunk(0), chunk(1)], true))).rejects.toThrow('connection reset');
    expect(a.r.status('s1', 'r1')).toEqual({ known: true, receivedChunks: 2, receivedBytes: 2 * MiB, complete: false });
    a.db.close();

    // A crash after writing part of chunk 2 but before recording it leaves junk at the end.
    const spool = join(work, 'spool', 's1__r1.part');
    appendFileSync(spool, randomBytes(12345));
    expect(statSync(spool).size).toBe(2 * MiB + 12345);

    const b = open();
    expect(b.r.status('s1', 'r1').receivedChunks).toBe(2);
    expect(() => b.r.status('s2', 'r1')).toThrow(/belongs to another site/);
    // the site resumes one chunk early (it never saw chunk 1 acknowledged): skipped, not duplicated
    const res = await b.r.receive('s1', messages([{ header: header(1) }, chunk(1), chunk(2), chunk(3), { trailer: { chunks: 4 } }]));
    expect(res).toEqual({ updateId: 'r1', receivedBytes: payload.length, receivedChunks: 4, complete: true, sha256: sha256Hex(payload) });
    expect(readFileSync(join(work, 'final', 's1', 'r1.bin')).equals(payload)).toBe(true);
    expect(b.seen).toEqual(['r1']);
    // a duplicate of the completed update gets the same answer
    const again = await b.r.receive('s1', messages([{ header: header(0) }]));
    expect(again.complete).toBe(true);
    b.db.close();
  });

  it('refuses a stream that does not start with a header or skips ahead on resume', async () => {
    const c = open();
    await expect(c.r.receive('s1', messages([chunk(0)]))).rejects.toMatchObject({ code: 'FEDLORA_ERR_UPDATE_INVALID' });
    await expect(c.r.receive('s1', messages([{ header: { ...header(5), updateId: 'r2' } }]))).rejects.toMatchObject({ code: 'FEDLORA_ERR_CHUNK_ORDER' });
    await expect(c.r.receive('s1', messages([{ header: { ...header(0), updateId: 'bad/../id' } }]))).rejects.toMatchObject({ code: 'FEDLORA_ERR_UPDATE_INVALID' });
    await expect(c.r.receive('s1', messages([{ header: { ...header(0), updateId: 'r3' } }, chunk(0)]))).rejects.toThrow(/ended without a trailer after 1 chunks/);
    c.db.close();
  });

  it('a newer stream for the same update takes over; the older one stops', async () => {
    const d = open();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const h = { ...header(0), updateId: 'r4' };
    async function* older(): AsyncIterable<UpdateMessage> {
      yield { header: h };
      yield chunk(0);
      await gate;
      yield chunk(1);
    }
    const a = d.r.receive('s1', older());
    for (let t = 0; t < 200 && d.r.status('s1', 'r4').receivedChunks < 1; t++) await new Promise((r) => setTimeout(r, 5));
    const b = await d.r.receive('s1', messages([{ header: { ...h, resumeFromChunk: 1 } }, chunk(1), chunk(2), chunk(3), { trailer: { chunks: 4 } }]));
    expect(b.complete).toBe(true);
    release();
    await expect(a).rejects.toThrow(/is being sent on a newer stream/);
    expect(readFileSync(join(work, 'final', 's1', 'r4.bin')).equals(payload)).toBe(true);
    d.db.close();
  });
});
