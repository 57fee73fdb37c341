// The data commands end to end through the real `fedlora` entry point (tsx, commander).
import { describe, it, expect, afterAll } from 'vitest';
import { writeFileSync, readFileSync, existsSync, mkdirSync, statSync } from 'node:fs';
import { buildByteTokenizer } from '../../site-agent/engine/index.ts';
import { join } from 'node:path';
import { runFedlora } from '../runner/fedlora-cli.ts';
import { tempDir } from './helpers.ts';

const t = tempDir();
afterAll(t.cleanup);

const fedlora = (...args: string[]) => runFedlora(args, { cwd: t.dir });

describe('fedlora data CLI', () => {
  const synth = join(t.dir, 'synth');
  const site = join(t.dir, 'site');

  it('synth writes non-IID sites; bad flags give a clear error', async () => {
    const r = await fedlora('synth', '--sites', '2', '--records', '30', '--out', synth, '--lang', 'en', '--skew', '1', '--format', 'csv', '--seed', '3');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/site-1: 30 records, \d+ planted identifiers/);
    const m = JSON.parse(readFileSync(join(synth, 'site-2', 'manifest.json'), 'utf8'));
    expect(Object.keys(m.departments)).toEqual(['Endocrinology']); // skew 1: site 2 only sees department 2
    const bad = await fedlora('synth', '--sites', '2', '--records', '3', '--out', synth, '--skew', '1.5');
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/FEDLORA_ERR_INVALID_ARGUMENT: --skew/);
  });

  it('site ingest with de-identification explicitly disabled is loud and recorded; report and build work', async () => {
    writeFileSync(join(t.dir, 'nodeid.yaml'), 'data:\n  deid:\n    enabled: false\n    i_understand_records_keep_phi: true\n');
    const r = await fedlora('site', 'ingest', '--format', 'csv', '--site-dir', site, '--config', join(t.dir, 'nodeid.yaml'), join(synth, 'site-1', 'records.csv'));
    expect(r.code).toBe(0);
    expect(r.err).toContain('DE-IDENTIFICATION IS DISABLED');
    expect(r.out).toMatch(/accepted: 30\nduplicates: 0\nquarantined: 0/);
    expect(existsSync(join(site, 'site.sqlite'))).toBe(true);

    const bad = join(t.dir, 'bad.csv');
    writeFileSync(bad, readFileSync(join(synth, 'site-1', 'records.csv'), 'utf8').split('\n').slice(0, 3).join('\n') + '\nonly,two\n');
    const r2 = await fedlora('site', 'ingest', '--format', 'csv', '--site-dir', site, '--config', join(t.dir, 'nodeid.yaml'), bad);
    expect(r2.out).toMatch(/accepted: 0\nduplicates: 2\nquarantined: 1\n  column_count: 1/);

    const rep = await fedlora('site', 'data', 'report', '--site-dir', site, '--json');
    expect(rep.code).toBe(0);
    const j = JSON.parse(rep.out);
    expect(j.records).toBe(30);
    expect(j.deidDisabledRuns).toBe(2);
    expect(j.quarantine).toEqual({ column_count: 1 });
    expect(Object.keys(j.byDepartment)).toEqual(['Cardiology']);
    const txt = await fedlora('site', 'data', 'report', '--site-dir', site);
    expect(txt.out).toMatch(/WITHOUT de-identification/);
    expect(txt.out).toMatch(/length \(characters\): min \d+/);

    // Token lengths with a model's tokenizer (the tiny byte-level BPE test models use).
    const model = join(t.dir, 'model');
    mkdirSync(model);
    const bt = buildByteTokenizer();
    writeFileSync(join(model, 'tokenizer.json'), JSON.stringify(bt.tokenizerJson));
    writeFileSync(join(model, 'tokenizer_config.json'), JSON.stringify(bt.tokenizerConfig));
    const tokRep = JSON.parse((await fedlora('site', 'data', 'report', '--site-dir', site, '--model', model, '--json')).out);
    expect(tokRep.tokens.count).toBe(30);
    expect(tokRep.tokens.p50).toBeGreaterThan(tokRep.chars.p50); // template + byte-level tokens

    const out = join(t.dir, 'ds');
    const b = await fedlora('site', 'data', 'build', '--site-dir', site, '--out', out);
    expect(b.code).toBe(0);
    expect(b.out).toMatch(/train \d+, validation \d+, test \d+, choices \d+/);
    // After the build the report has the stored splits: whole patients, none in two splits.
    const split = JSON.parse((await fedlora('site', 'data', 'report', '--site-dir', site, '--json')).out);
    expect(split.patient_overlap).toBe(0);
    expect(Object.values(split.splits as Record<string, { records: number; patients: number }>).reduce((a, x) => a + x.records, 0)).toBe(30);
    expect(readFileSync(join(out, 'train.jsonl'), 'utf8').split('\n')[0]).toMatch(/^\{"messages":\[\{"role":"system"/);
  });

  it('site ingest de-identifies by default with a 0600 site key; planted identifiers stay out of site.sqlite', async () => {
    const dir = join(t.dir, 'site3');
    const r = await fedlora('site', 'ingest', '--format', 'csv', '--site-dir', dir, join(synth, 'site-2', 'records.csv'));
    expect(r.code).toBe(0);
    expect(r.err).not.toContain('DISABLED');
    expect(r.out).toMatch(/accepted: 30/);
    expect(r.out).toMatch(/de-identification: on \(.*NAME \d+/);
    expect(statSync(join(dir, 'secrets', 'deid.key')).mode & 0o777).toBe(0o600);
    const db = readFileSync(join(dir, 'site.sqlite')).toString('utf8') + (existsSync(join(dir, 'site.sqlite-wal')) ? readFileSync(join(dir, 'site.sqlite-wal')).toString('utf8') : '');
    const planted = readFileSync(join(synth, 'site-2', 'phi.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { type: string; text: string });
    expect(planted.length).toBeGreaterThan(0);
    for (const p of planted.filter((x) => x.type !== 'DATE')) expect(db).not.toContain(p.text);
  });

  it('refuses to disable de-identification with only one flag, and reports a missing input file', async () => {
    writeFileSync(join(t.dir, 'half.yaml'), 'data:\n  deid:\n    enabled: false\n');
    const r = await fedlora('site', 'ingest', '--format', 'csv', '--site-dir', join(t.dir, 'site2'), '--config', join(t.dir, 'half.yaml'), join(synth, 'site-1', 'records.csv'));
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/FEDLORA_ERR_DEID: .*i_understand_records_keep_phi/);
    const m = await fedlora('site', 'ingest', '--format', 'csv', '--site-dir', site, join(t.dir, 'nope.csv'));
    expect(m.code).toBe(2);
    expect(m.err).toMatch(/FEDLORA_ERR_IO: .*nope\.csv/);
    writeFileSync(join(t.dir, 'badcfg.yaml'), 'data:\n  split:\n    train: lots\n');
    const c = await fedlora('site', 'ingest', '--format', 'csv', '--site-dir', site, '--config', join(t.dir, 'badcfg.yaml'), join(synth, 'site-1', 'records.csv'));
    expect(c.code).toBe(2);
    expect(c.err).toMatch(/FEDLORA_ERR_CONFIG: .*badcfg\.yaml: data\.split\.train: /);
  });
});
