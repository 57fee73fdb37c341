import { describe, it, expect, afterAll } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readCsv } from '../../site-agent/data/ingest/csv.ts';
import { readLines } from '../../site-agent/data/ingest/lines.ts';
import { tempDir } from './helpers.ts';

const t = tempDir();
afterAll(t.cleanup);
const opts = { delimiter: ',', quote: '"', maxRecordBytes: 4096 };

async function parse(name: string, content: string | Buffer, o = opts) {
  const p = join(t.dir, name);
  writeFileSync(p, content);
  const out = [];
  for await (const r of readCsv(p, o)) out.push(r);
  return out;
}

// GBK bytes of "胸痛" (as a legacy Chinese hospital export would write them).
const GBK_XIONGTONG = Buffer.from([0xd0, 0xd8, 0xcd, 0xb4]);

describe('streaming CSV parser', () => {
  it('handles quotes, doubled quotes, delimiters and newlines inside quotes, CRLF and a BOM', async () => {
    const recs = await parse('a.csv', '\ufeffa,b,c\r\n1,"x, y","say ""hi"""\r\n2,"line1\r\nline2",z\n\n3,,\n');
    expect(recs.map((r) => r.fields)).toEqual([
      ['a', 'b', 'c'],
      ['1', 'x, y', 'say "hi"'],
      ['2', 'line1\nline2', 'z'],
      ['3', '', ''],
    ]);
    expect(recs[2].startLine).toBe(3);
    expect(recs[2].endLine).toBe(4);
    expect(recs[3].startLine).toBe(6);
  });

  it('reports a file that ends inside a quoted field as truncated, keeping earlier records', async () => {
    const recs = await parse('trunc.csv', 'a,b\n1,2\n3,"unfinished\nmore text');
    expect(recs[1].fields).toEqual(['1', '2']);
    expect(recs[2].error?.reason).toBe('truncated');
    expect(recs[2].startLine).toBe(3);
  });

  it('drops an oversize record but keeps the quote state so the next record parses', async () => {
    const big = 'q'.repeat(10_000);
    const recs = await parse('big.csv', `a,b\n1,"${big}\n${big}, still quoted"\n2,ok\n`);
    expect(recs.length).toBe(3);
    expect(recs[1].error?.reason).toBe('too_large');
    expect(recs[2].fields).toEqual(['2', 'ok']);
    expect(recs[2].startLine).toBe(4);
  });

  it('flags a line that is not UTF-8 and says when it looks like GBK', async () => {
    const content = Buffer.concat([Buffer.from('a,b\n1,'), GBK_XIONGTONG, Buffer.from('\n2,fine\n')]);
    const recs = await parse('gbk.csv', content);
    expect(recs[1].error?.reason).toBe('encoding');
    expect(recs[1].error?.detail).toMatch(/line 2: not valid UTF-8.*GBK/);
    expect(recs[2].fields).toEqual(['2', 'fine']);
  });

  it('decodes a GB18030 file when data.encoding says so', async () => {
    const content = Buffer.concat([Buffer.from('a,b\n1,'), GBK_XIONGTONG, Buffer.from('\n')]);
    const recs = await parse('gb.csv', content, { ...opts, encoding: 'gb18030' } as typeof opts);
    expect(recs[1].fields).toEqual(['1', '胸痛']);
  });

  it('line reader splits across chunk boundaries and marks an unterminated last line', async () => {
    const p = join(t.dir, 'lines.txt');
    const long = 'x'.repeat((1 << 20) + 17); // crosses the 1 MiB read chunk
    writeFileSync(p, `first\n${long}\n中文行\nlast`);
    const lines = [];
    for await (const l of readLines(p, { maxLineBytes: 4 << 20 })) lines.push(l);
    expect(lines.map((l) => l.text.length)).toEqual([5, long.length, 3, 4]);
    expect(lines[2].text).toBe('中文行');
    expect(lines[3].terminated).toBe(false);
    expect(lines[1].terminated).toBe(true);
  });
});
