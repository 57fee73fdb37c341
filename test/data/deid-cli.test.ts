// `fedlora deid` end to end through the real entry point: JSONL (recursive string values, a
// malformed line), a text file, the report, and the 0600 key file that is never printed.
import { describe, it, expect, afterAll } from 'vitest';
import { writeFileSync, readFileSync, existsSync, statSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { runFedlora } from '../runner/fedlora-cli.ts';
import { tempDir } from './helpers.ts';
import { generateLabelledSet } from '../../site-agent/data/deid/labelled-set.ts';

const t = tempDir('fedlora-deid-cli-');
afterAll(t.cleanup);

const fedlora = (...args: string[]) => runFedlora(args, { cwd: t.dir });

describe('fedlora deid', () => {
  const key = join(t.dir, 'deid.key');

  it('JSONL: every string value recursively, malformed line reported by number, run continues then fails', async () => {
    const inp = join(t.dir, 'in.jsonl');
    const lines = [
      JSON.stringify({ patientId: 'H1', name: '张三', admissionDate: '2023-05-01', history: '患者张三，92岁，电话13812345678，HbA1c 8.2%。', notes: ['住院号：ZY123456', { by: 'Dr. Jane Doe' }], n: 3 }),
      '{"broken": "患者李四 13900001111"',
      JSON.stringify({ patientId: 'H1', text: '张三 2023年5月11日复查，肌钙蛋白 2.3 ng/mL，I21.9' }),
      JSON.stringify([{ patientName: '欧阳娜娜', note: '欧阳娜娜今日出院' }]), // a top-level array: name found via the name field
      '',
      JSON.stringify({ patientId: 'H2', text: 'Mr. John Smith, 123 Main St, Springfield, IL 62704, john@example.com' }),
    ];
    writeFileSync(inp, lines.join('\n') + '\n');
    const r = await fedlora('deid', '--in', inp, '--out', join(t.dir, 'out.jsonl'), '--report', join(t.dir, 'rep.json'), '--mode', 'pseudonym', '--key-file', key);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/FEDLORA_ERR_INGEST: .*in\.jsonl: 1 malformed JSONL line\(s\) skipped \(line 2\)/);
    expect(r.err).not.toContain('13900001111'); // the bad line's content is never echoed
    const out = readFileSync(join(t.dir, 'out.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(out).toHaveLength(4);
    const all = JSON.stringify(out);
    for (const phi of ['张三', '欧阳娜娜', '13812345678', 'ZY123456', 'Jane Doe', 'John Smith', '123 Main St', '62704', 'john@example.com', '2023-05-01', '2023年5月11日', 'H1']) {
      expect(all).not.toContain(phi);
    }
    for (const keep of ['HbA1c 8.2%', '肌钙蛋白 2.3 ng/mL', 'I21.9', '≥90岁']) expect(all).toContain(keep);
    expect(out[0].n).toBe(3);
    // same patient (H1) in two records: same pseudonym, dates 10 days apart stay 10 days apart
    const pseudo = out[0].name as string;
    expect(out[0].history).toContain(`患者${pseudo}`);
    expect(out[1].text.startsWith(pseudo)).toBe(true);
    const d0 = Date.parse(out[0].admissionDate);
    const m = /(\d{4})年(\d{1,2})月(\d{1,2})日/.exec(out[1].text)!;
    expect((Date.UTC(+m[1], +m[2] - 1, +m[3]) - d0) / 86_400_000).toBe(10);

    const rep = JSON.parse(readFileSync(join(t.dir, 'rep.json'), 'utf8'));
    expect(rep.records).toBe(4);
    expect(rep.malformed).toEqual([{ line: 2, error: expect.stringContaining('in.jsonl:2') }]);
    expect(rep.byType).toMatchObject({ NAME: 7, PHONE: 1, MRN: 1, AGE: 1, DATE: 2, ADDRESS: 1, ZIP: 1, EMAIL: 1, ID: 3 }); // ID: 3 removed patientId fields
    expect(rep.spans).toBe(Object.values(rep.byType as Record<string, number>).reduce((a, b) => a + b, 0));
  });

  it('the key file is created 0600, never printed, reused, and refused when group-readable', async () => {
    expect(existsSync(key)).toBe(true);
    expect(statSync(key).mode & 0o777).toBe(0o600);
    const hex = readFileSync(key, 'utf8').trim();
    expect(hex).toMatch(/^[0-9a-f]{64}$/);
    const inp = join(t.dir, 'a.txt');
    writeFileSync(inp, '患者王小明，身份证11010519491231002X。\n');
    const r1 = await fedlora('deid', '--in', inp, '--out', join(t.dir, 'a1.txt'), '--mode', 'pseudonym', '--key-file', key);
    const r2 = await fedlora('deid', '--in', inp, '--out', join(t.dir, 'a2.txt'), '--mode', 'pseudonym', '--key-file', key);
    expect(r1.code).toBe(0);
    expect(r1.out + r1.err + r2.out + r2.err).not.toContain(hex);
    expect(readFileSync(join(t.dir, 'a1.txt'), 'utf8')).toBe(readFileSync(join(t.dir, 'a2.txt'), 'utf8')); // same key → same pseudonyms
    // no --key-file: a fresh key next to the output, mode 0600
    const r3 = await fedlora('deid', '--in', inp, '--out', join(t.dir, 'a3.txt'), '--mode', 'pseudonym');
    expect(r3.code).toBe(0);
    expect(statSync(join(t.dir, 'a3.txt.deid.key')).mode & 0o777).toBe(0o600);
    expect(r3.out + r3.err).not.toContain(readFileSync(join(t.dir, 'a3.txt.deid.key'), 'utf8').trim());
    chmodSync(key, 0o644);
    const bad = await fedlora('deid', '--in', inp, '--out', join(t.dir, 'a4.txt'), '--key-file', key);
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/FEDLORA_ERR_CONFIG: .*deid\.key: de-identification key is accessible to group\/others/);
    chmodSync(key, 0o600);
  });

  it('txt: every line of the labelled set, with a report that matches the planted counts', async () => {
    const docs = generateLabelledSet(99, 60);
    const inp = join(t.dir, 'notes.txt');
    writeFileSync(inp, docs.map((d) => d.text).join('\n') + '\n');
    const outp = join(t.dir, 'notes.out.txt');
    const r = await fedlora('deid', '--in', inp, '--out', outp, '--format', 'txt', '--report', join(t.dir, 'notes.json'), '--key-file', key, '--patient', 'P-7');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/de-identified 60 record\(s\)/);
    const out = readFileSync(outp, 'utf8').split('\n');
    expect(out).toHaveLength(61);
    for (const [i, d] of docs.entries()) {
      for (const x of d.distractors) expect(out[i]).toContain(x.text);
      for (const g of d.gold) if (['ID', 'PHONE', 'EMAIL', 'URL', 'BANK_CARD', 'PASSPORT'].includes(g.type)) expect(out[i]).not.toContain(g.text);
    }
    const rep = JSON.parse(readFileSync(join(t.dir, 'notes.json'), 'utf8'));
    expect(rep.format).toBe('txt');
    // knownNames are not available to the txt command, so the context-free patient names of the
    // last template may be missed: every other type is counted exactly.
    const planted: Record<string, number> = {};
    for (const d of docs) for (const g of d.gold) planted[g.type] = (planted[g.type] ?? 0) + 1;
    for (const [type, n] of Object.entries(planted)) {
      if (type === 'NAME') expect(rep.byType.NAME).toBeLessThanOrEqual(n);
      else expect(rep.byType[type], type).toBe(n);
    }
  });

  it('a bad mode and a missing input give clear errors', async () => {
    expect((await fedlora('deid', '--in', 'nope.jsonl', '--out', join(t.dir, 'x.jsonl'), '--key-file', key)).err).toMatch(/FEDLORA_ERR_NOT_FOUND: nope\.jsonl/);
    expect((await fedlora('deid', '--in', 'a.txt', '--out', 'x', '--mode', 'hash', '--key-file', key)).err).toMatch(/FEDLORA_ERR_INVALID_ARGUMENT: --mode hash/);
  });
});
