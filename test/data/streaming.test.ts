// Ingest streams: a file far larger than what the process may hold is read record by record.
// The assertion is on heap growth while ingesting a ~64 MB CSV (and JSONL), not on time.
import { describe, it, expect, afterAll } from 'vitest';
import { openSync, writeSync, closeSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import v8 from 'node:v8';
import vm from 'node:vm';
import { openSiteDataStore, ingestFiles, defaultDataConfig } from '../../site-agent/data/index.ts';
import { tempDir, stubDeid } from './helpers.ts';
import { TEST_TIMEOUT_MS } from '../runner/limits.ts';

const t = tempDir();
afterAll(t.cleanup);
const key = randomBytes(32);

// CSV (our own parser) gets the ~55 MB file; JSONL and FHIR share the line reader / use the
// entry scanner and get ~20 MB files, which still make retention visible at a tenth of the size.
const SIZES = { csv: 1700, jsonl: 640 } as const;
const filler = '患者胸痛伴大汗，心电图ST段抬高，肌钙蛋白升高。Chest pain with diaphoresis, ST elevation. '.repeat(300); // ~30 KB

function writeBig(path: string, kind: 'csv' | 'jsonl'): number {
  const N = SIZES[kind];
  const fd = openSync(path, 'w');
  if (kind === 'csv') writeSync(fd, 'patient_id,chief_complaint,history,diagnosis\n');
  for (let i = 0; i < N; i++) {
    const rec = { patient_id: `P${i}`, chief_complaint: `chest pain ${i}`, history: `case ${i}: ${filler}`, diagnosis: i % 2 ? 'Acute myocardial infarction' : '急性心肌梗死' };
    writeSync(fd, kind === 'csv' ? `${rec.patient_id},${rec.chief_complaint},"${rec.history}\n(continued, quoted newline)",${rec.diagnosis}\n` : JSON.stringify(rec) + '\n');
  }
  closeSync(fd);
  return statSync(path).size;
}

// Live heap, not garbage: a young generation full of garbage can hold 16-32 MB whatever the
// file size, so the sampler forces a GC before each reading. What must not grow with the file
// is what the ingest retains.
v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

async function peakHeapGrowth(fn: () => Promise<unknown>): Promise<number> {
  gc();
  const base = process.memoryUsage().heapUsed;
  let peak = base;
  const timer = setInterval(() => {
    gc();
    peak = Math.max(peak, process.memoryUsage().heapUsed);
  }, 250);
  try {
    await fn();
  } finally {
    clearInterval(timer);
  }
  return peak - base;
}

describe('streaming ingest', () => {
  for (const kind of ['csv', 'jsonl'] as const) {
    it(`${kind}: heap growth stays far below the file size`, async () => {
      const path = join(t.dir, `big.${kind}`);
      const size = writeBig(path, kind);
      expect(size).toBeGreaterThan(kind === 'csv' ? 50 * 1024 * 1024 : 20 * 1024 * 1024);
      const store = openSiteDataStore(join(t.dir, kind, 'site.sqlite'));
      let accepted = 0;
      const growth = await peakHeapGrowth(async () => {
        const s = await ingestFiles(store, [path], { format: kind, config: defaultDataConfig(), key, deidentifier: stubDeid(key) });
        accepted = s.accepted;
      });
      expect(accepted).toBe(SIZES[kind]);
      expect(store.countRecords()).toBe(SIZES[kind]);
      // Holding the file (as JS strings: 2 bytes/char) would be > 2x size; we allow a tenth.
      expect(growth).toBeLessThan(size / 10);
      if (process.env.FEDLORA_DEBUG) console.log(kind, { size, growth });
      store.close();
    }); // the suite's deadline (vitest.config.ts, scaled to the machine): each record is also scanned for fields and near-duplicates
  }

  it('fhir: a ~20 MB Bundle is streamed entry by entry', async () => {
    const path = join(t.dir, 'big-bundle.json');
    const fd = openSync(path, 'w');
    writeSync(fd, '{"resourceType":"Bundle","type":"collection","entry":[');
    writeSync(fd, JSON.stringify({ fullUrl: 'urn:uuid:p1', resource: { resourceType: 'Patient', id: 'p1', name: [{ family: 'Doe', given: ['Jane'] }] } }));
    const M = 320;
    for (let i = 0; i < M; i++) {
      const ref = { reference: 'urn:uuid:p1' };
      const enc = { reference: `urn:uuid:e${i}` };
      const entries = [
        { resourceType: 'Encounter', id: `e${i}`, subject: ref, reasonCode: [{ text: `chest pain ${i}` }], period: { start: '2020-01-01' } },
        { resourceType: 'Condition', id: `c${i}`, subject: ref, encounter: enc, code: { coding: [{ system: 'http://hl7.org/fhir/sid/icd-10-cm', code: 'I21.9', display: 'Acute myocardial infarction' }] } },
        { resourceType: 'Observation', id: `o${i}`, subject: ref, encounter: enc, code: { coding: [{ system: 'http://loinc.org', code: '10164-2' }] }, valueString: `case ${i} ${filler}${filler}` },
      ];
      for (const r of entries) writeSync(fd, ',' + JSON.stringify({ fullUrl: `urn:uuid:${r.id}`, resource: r }));
    }
    writeSync(fd, ']}');
    closeSync(fd);
    const size = statSync(path).size;
    expect(size).toBeGreaterThan(20 * 1024 * 1024);
    const store = openSiteDataStore(join(t.dir, 'fhir', 'site.sqlite'));
    let accepted = 0;
    const growth = await peakHeapGrowth(async () => {
      accepted = (await ingestFiles(store, [path], { format: 'fhir', config: defaultDataConfig(), key, deidentifier: stubDeid(key) })).accepted;
    });
    expect(accepted).toBe(M);
    expect(growth).toBeLessThan(size / 10);
    if (process.env.FEDLORA_DEBUG) console.log('fhir', { size, growth });
    store.close();
  }, TEST_TIMEOUT_MS);
});
