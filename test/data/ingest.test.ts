import { describe, it, expect, afterAll } from 'vitest';
import { writeFileSync, readFileSync, statSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  openSiteDataStore, ingestFiles, defaultDataConfig, parseDataConfig, generateSites, loadOrCreateSiteKey, DEID_DISABLED_WARNING,
} from '../../site-agent/data/index.ts';
import { toCsv } from '../../site-agent/data/synth/generate.ts';
import { AuditLog } from '../../shared/audit.ts';
import { tempDir, stubDeid } from './helpers.ts';

const t = tempDir();
afterAll(t.cleanup);
const key = randomBytes(32);
const cfg = defaultDataConfig();
let n = 0;
const newStore = () => openSiteDataStore(join(t.dir, `s${n++}`, 'site.sqlite'));

describe('CSV / JSONL ingest', () => {
  const [site] = generateSites({ sites: 1, records: 30, seed: 7, lang: 'mixed' });
  const csv = join(t.dir, 'records.csv');
  writeFileSync(csv, toCsv(site.records));

  it('ingests every synthetic record, de-identified, and re-ingesting adds nothing twice', async () => {
    const store = newStore();
    const deid = stubDeid(key);
    const s1 = await ingestFiles(store, [csv], { format: 'csv', config: cfg, key, deidentifier: deid });
    expect(s1.accepted).toBe(30);
    expect(s1.quarantined).toBe(0);
    expect(deid.calls).toBeGreaterThanOrEqual(30 * 5); // every free-text field of every record
    const recs = store.allRecords();
    expect(recs.length).toBe(30);
    for (const r of recs) {
      expect(r.patientKey).toMatch(/^P[0-9a-f]{20}$/);
      expect(JSON.stringify(r)).not.toContain(site.records[0].patient_id); // raw MRN never stored
    }
    for (const p of site.planted.filter((x) => x.type === 'NAME')) expect(JSON.stringify(recs)).not.toContain(p.text);
    // Dates are shifted per patient, consistently: the stay length is kept.
    const byId = new Map(site.records.map((r) => [r.chief_complaint, r]));
    const r0 = recs.find((r) => byId.has(r.chiefComplaint!))!;
    const src = byId.get(r0.chiefComplaint!)!;
    expect(r0.admissionDate).not.toBe(src.admission_date);
    const stay = (a: string, b: string) => (Date.parse(b) - Date.parse(a)) / 864e5;
    expect(stay(r0.admissionDate!, r0.dischargeDate!)).toBe(stay(src.admission_date, src.discharge_date));

    const s2 = await ingestFiles(store, [csv], { format: 'csv', config: cfg, key, deidentifier: stubDeid(key) });
    expect(s2.accepted).toBe(0);
    expect(s2.duplicates).toBe(30);
    expect(store.countRecords()).toBe(30);
    // The same case as JSONL (another export of the same data) is a duplicate too.
    const jsonl = join(t.dir, 'records.jsonl');
    writeFileSync(jsonl, site.records.map((r) => JSON.stringify(r)).join('\n') + '\n');
    const s3 = await ingestFiles(store, [jsonl], { format: 'jsonl', config: cfg, key, deidentifier: stubDeid(key) });
    expect(s3.duplicates).toBe(30);
    expect(store.countRecords()).toBe(30);
    store.close();
  });

  it('dedups records that differ only in full-width characters and spacing', async () => {
    const store = newStore();
    const r = site.records[0];
    const variant = { ...r, chief_complaint: '  ' + r.chief_complaint.replace(/\d/g, (d) => String.fromCharCode(0xff10 + Number(d))) + '  ' };
    const p = join(t.dir, 'variant.csv');
    writeFileSync(p, toCsv([r, variant]));
    const s = await ingestFiles(store, [p], { format: 'csv', config: cfg, key, deidentifier: stubDeid(key) });
    expect(s.accepted).toBe(1);
    expect(s.duplicates).toBe(1);
    store.close();
  });

  it('quarantines each kind of bad CSV row with reason and file:line, and keeps the rest', async () => {
    const store = newStore();
    const good = site.records.slice(0, 5);
    const header = toCsv([]).trimEnd();
    const rows = toCsv(good).trimEnd().split('\n').slice(1);
    const missing = toCsv([{ ...site.records[5], diagnosis: '' }]).trimEnd().split('\n')[1];
    const badDate = toCsv([{ ...site.records[6], admission_date: '2023-02-31' }]).trimEnd().split('\n')[1];
    const huge = toCsv([{ ...site.records[7], history: 'x'.repeat(10 * 1024 * 1024) }]).trimEnd().split('\n')[1];
    const p = join(t.dir, 'bad.csv');
    writeFileSync(
      p,
      Buffer.concat([
        Buffer.from([header, rows[0], missing, rows[1], 'only,three,fields', rows[2], badDate, huge, rows[3]].join('\n') + '\n'),
        Buffer.from('GBK-row,'), Buffer.from([0xd0, 0xd8, 0xcd, 0xb4]), Buffer.from('\n'),
        Buffer.from(rows[4] + '\n'),
        Buffer.from('P9,"never closed,'),
      ]),
    );
    const s = await ingestFiles(store, [p], { format: 'csv', config: cfg, key, deidentifier: stubDeid(key) });
    expect(s.accepted).toBe(5);
    expect(s.quarantineByReason).toEqual({ missing_field: 1, column_count: 1, invalid_field: 1, too_large: 1, encoding: 1, truncated: 1 });
    const q = store.quarantined();
    expect(q.find((x) => x.reason === 'missing_field')!.source).toBe(`${p}:3`);
    expect(q.find((x) => x.reason === 'missing_field')!.detail).toContain('diagnosis');
    expect(q.find((x) => x.reason === 'too_large')!.source).toBe(`${p}:8`);
    expect(q.find((x) => x.reason === 'encoding')!.detail).toMatch(/GBK/);
    expect(q.find((x) => x.reason === 'invalid_field')!.detail).toMatch(/^admissionDate is not a valid calendar date/);
    expect(JSON.stringify(q)).not.toContain('2023-02-31');
    expect(q.find((x) => x.reason === 'truncated')!.source).toBe(`${p}:12`);
    // The 10 MB record did not land in the quarantine table either.
    expect(Math.max(...q.map((x) => x.detail.length))).toBeLessThanOrEqual(500);
    // Re-ingesting the same bad file does not quarantine the same rows twice.
    await ingestFiles(store, [p], { format: 'csv', config: cfg, key, deidentifier: stubDeid(key) });
    expect(store.quarantined().length).toBe(6);
    store.close();
  });

  it('a header without a required mapped column is a file-level FEDLORA_ERR_MAPPING; other files still ingest', async () => {
    const store = newStore();
    const p = join(t.dir, 'nodx.csv');
    writeFileSync(p, 'patient_id,chief_complaint\nA1,chest pain\n');
    const s = await ingestFiles(store, [p, csv], { format: 'csv', config: cfg, key, deidentifier: stubDeid(key) });
    expect(s.files[0].error).toMatch(/FEDLORA_ERR_MAPPING: .*nodx\.csv:1: required field diagnosis is mapped to column "diagnosis"/);
    expect(s.files[1].accepted).toBe(30);
    expect(s.quarantineByReason).toEqual({ mapping: 1 });
    store.close();
  });

  it('an optional mapped column missing from the header is reported as a note, records still ingest', async () => {
    const store = newStore();
    const p = join(t.dir, 'noexam.csv');
    writeFileSync(p, 'patient_id,chief_complaint,diagnosis\nA1,chest pain,Acute myocardial infarction\n');
    const s = await ingestFiles(store, [p], { format: 'csv', config: cfg, key, deidentifier: stubDeid(key) });
    expect(s.accepted).toBe(1);
    expect(s.warnings.some((w) => /optional field exam is mapped to column "exam"/.test(w))).toBe(true);
    store.close();
  });

  it('a GBK-encoded file: the header fails the file with FEDLORA_ERR_ENCODING; with data.encoding gb18030 it ingests', async () => {
    const store = newStore();
    const xiongtong = Buffer.from([0xd0, 0xd8, 0xcd, 0xb4]); // "胸痛" in GBK
    const p = join(t.dir, 'gbk.csv');
    writeFileSync(p, Buffer.concat([Buffer.from('patient_id,'), xiongtong, Buffer.from(',diagnosis\nA1,'), xiongtong, Buffer.from(',Angina\n')]));
    const s = await ingestFiles(store, [p], { format: 'csv', config: cfg, key, deidentifier: stubDeid(key) });
    expect(s.files[0].error).toMatch(/FEDLORA_ERR_ENCODING: .*gbk\.csv:1: header row unusable: line 1: not valid UTF-8 \(the bytes look like GBK/);
    expect(s.quarantineByReason).toEqual({ encoding: 1 });
    const gbCfg = parseDataConfig({ encoding: 'gb18030', mapping: { chiefComplaint: '胸痛' } });
    const s2 = await ingestFiles(store, [p], { format: 'csv', config: gbCfg, key, deidentifier: stubDeid(key) });
    expect(s2.accepted).toBe(1);
    expect(store.allRecords()[0].chiefComplaint).toBe('胸痛');
    store.close();
  });

  it('honours a custom field mapping (dotted JSON paths, other column names)', async () => {
    const store = newStore();
    const p = join(t.dir, 'custom.jsonl');
    const lines = [
      { pid: 'X1', visit: { cc: '胸痛3小时', dx: '急性心肌梗死' }, labs: { '肌钙蛋白I': '2.3 ng/mL ↑' } },
      { pid: 'X2', visit: { cc: 'cough, fever' } },
    ];
    writeFileSync(p, lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
    const config = parseDataConfig({
      mapping: { patientId: 'pid', chiefComplaint: 'visit.cc', diagnosis: 'visit.dx', labs: 'labs', history: null },
    });
    const s = await ingestFiles(store, [p], { format: 'jsonl', config, key, deidentifier: stubDeid(key) });
    expect(s.accepted).toBe(1);
    expect(s.quarantineByReason).toEqual({ missing_field: 1 });
    const [r] = store.allRecords();
    expect(r).toMatchObject({ lang: 'zh', chiefComplaint: '胸痛3小时', diagnosis: '急性心肌梗死', labs: '肌钙蛋白I: 2.3 ng/mL ↑' });
    store.close();
  });

  it('JSONL: invalid JSON, non-object, truncated last line, invalid UTF-8 and a 10 MB line are quarantined; the rest is kept', async () => {
    const store = newStore();
    const ok = site.records.slice(10, 13).map((r) => JSON.stringify(r));
    const p = join(t.dir, 'bad.jsonl');
    writeFileSync(
      p,
      Buffer.concat([
        Buffer.from([ok[0], '{"patient_name": "王秀英", "phone": 13812345678 oops}', '[1,2]', JSON.stringify({ ...site.records[14], history: 'y'.repeat(10 << 20) }), ok[1]].join('\n') + '\n'),
        Buffer.from('{"chief_complaint":"'), Buffer.from([0xff, 0xfe]), Buffer.from('"}\n'),
        Buffer.from(ok[2] + '\n' + ok[0].slice(0, 40)),
      ]),
    );
    const s = await ingestFiles(store, [p], { format: 'jsonl', config: cfg, key, deidentifier: stubDeid(key) });
    expect(s.accepted).toBe(3);
    expect(s.quarantineByReason).toEqual({ invalid_json: 2, too_large: 1, encoding: 1, truncated: 1 });
    expect(store.quarantined().find((q) => q.reason === 'truncated')!.source).toBe(`${p}:8`);
    // Quarantine details never quote the record (V8's JSON errors would).
    const details = JSON.stringify(store.quarantined());
    expect(details).not.toContain('王秀英');
    expect(details).not.toContain('1381234');
    store.close();
  });
});

describe('de-identification cannot be bypassed silently', () => {
  const [site] = generateSites({ sites: 1, records: 3, seed: 3 });
  const csv = join(t.dir, 'three.csv');
  writeFileSync(csv, toCsv(site.records));

  it('enabled: false alone is refused', async () => {
    const store = newStore();
    const config = parseDataConfig({ deid: { enabled: false } });
    await expect(ingestFiles(store, [csv], { format: 'csv', config, key })).rejects.toThrow(/FEDLORA_ERR_DEID|i_understand_records_keep_phi/);
    expect(store.countRecords()).toBe(0);
    store.close();
  });

  it('with both flags the run is stored, recorded as an event and warned about', async () => {
    const store = newStore();
    const config = parseDataConfig({ deid: { enabled: false, i_understand_records_keep_phi: true } });
    const s = await ingestFiles(store, [csv], { format: 'csv', config, key });
    expect(s.accepted).toBe(3);
    expect(s.deid.enabled).toBe(false);
    expect(s.warnings).toContain(DEID_DISABLED_WARNING);
    expect(store.events('deid_disabled').length).toBe(1);
    // ... and in the site's tamper-evident audit log, before the run's own entry.
    const audit = new AuditLog(store.db, 'site_audit');
    expect(audit.list().map((e) => e.action)).toEqual(['deid_disabled', 'data_ingest']);
    expect(audit.verify().ok).toBe(true);
    expect(store.db.prepare('SELECT deid_enabled FROM data_ingest_runs').pluck().get()).toBe(0);
    store.close();
  });

  it('the site key is created 0600 and a group-readable key is refused', () => {
    const dir = join(t.dir, 'keysite');
    const k1 = loadOrCreateSiteKey(dir);
    expect(k1.length).toBe(32);
    const p = join(dir, 'secrets', 'deid.key');
    expect(statSync(p).mode & 0o777).toBe(0o600);
    expect(loadOrCreateSiteKey(dir).equals(k1)).toBe(true);
    writeFileSync(p, readFileSync(p), { mode: 0o644 });
    chmodSync(p, 0o644);
    expect(() => loadOrCreateSiteKey(dir)).toThrow(/FEDLORA_ERR_CONFIG|chmod 600/);
  });
});

describe('with the real de-identifier (site-agent/data/deid)', () => {
  it('planted identifiers never reach the database; free-text and structured dates move together', async () => {
    const [site] = generateSites({ sites: 1, records: 40, seed: 21, lang: 'mixed' });
    const p = join(t.dir, 'real.csv');
    writeFileSync(p, toCsv(site.records));
    const store = newStore();
    const s = await ingestFiles(store, [p], { format: 'csv', config: cfg, key }); // no injected de-identifier
    expect(s.accepted).toBe(40);
    expect(s.deid.enabled).toBe(true);
    for (const ty of ['NAME', 'ID', 'PHONE', 'MRN', 'DATE'] as const) expect(s.deid.phiSpans[ty]).toBeGreaterThanOrEqual(40);
    const all = JSON.stringify(store.allRecords());
    for (const ph of site.planted.filter((x) => x.type !== 'DATE')) expect(all).not.toContain(ph.text);
    // A zh record: the shifted admission date is the date written in its history.
    const zh = store.allRecords().find((r) => r.lang === 'zh')!;
    const [y, m, d] = zh.admissionDate!.split('-').map(Number);
    expect(zh.history).toContain(`于${y}年${m}月${d}日入院`);
    store.close();
  });
});
