// Where every parsed record goes: mapped fields → cleaning → required-field check → keyed
// content hash (dedup) → structured fields + missing-value policy → de-identification →
// near-duplicate check → SQLite. Rejected input goes to quarantine with
// a reason and its source (file:line or resource id). Inserts are batched in transactions;
// flush() commits, and the ingest only reports after it (persist before acknowledging).

import type { CaseRecord, PhiType } from '../types.ts';
import type { DataConfig, MappableField } from '../config-schema.ts';
import { TEXT_FIELDS } from '../config-schema.ts';
import type { SiteDataStore } from '../store.ts';
import { makeCleaner, hasCjk, type Cleaner } from '../clean.ts';
import { patientPseudonym, recordHash } from '../site-key.ts';
import type { Deidentifier } from '../deid-bridge.ts';
import { ageBand, normalizeSex } from './subgroups.ts';
import { IngestFields } from '../extract/at-ingest.ts';
import { recordText } from '../config-schema.ts';

export type MappedFields = Partial<Record<MappableField, string>>;

export interface SinkCounts {
  accepted: number;
  duplicates: number;
  quarantined: number;
  byReason: Record<string, number>;
  phiSpans: Partial<Record<PhiType, number>>;
  /** Near-duplicate pairs found (stored record, earlier record), and near-copies merged (not stored). */
  nearDuplicates: number;
  merged: number;
}

const BATCH = 500;
const FHIR_SOURCES: Partial<Record<MappableField, string>> = {
  patientId: 'Patient.identifier MR / Patient.id',
  chiefComplaint: 'Encounter.reasonCode or Observation 10154-3',
  diagnosis: 'a Condition with encounter = this Encounter',
  history: 'Observation 10164-2 / 11348-0',
  exam: 'Observation 29545-1',
  treatment: 'MedicationRequest / Procedure of the encounter',
};
// Fields that are de-identified: everything free-text. icd10 is a code; department a unit name.
const DEID_FIELDS = ['chiefComplaint', 'history', 'exam', 'labs', 'diagnosis', 'treatment'] as const;

/** yyyy-mm-dd from common export forms (ISO with time, yyyy/mm/dd, yyyy.mm.dd, 2024年3月5日). */
function toIsoDate(s: string): string | null {
  const m = /^(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})日?(?:[T\s].*)?$/.exec(s.trim());
  if (!m) return null;
  const iso = `${m[1]}-${m[2].padStart(2, '0')}-${m[3].padStart(2, '0')}`;
  const t = Date.parse(iso + 'T00:00:00Z');
  return Number.isNaN(t) || new Date(t).toISOString().slice(0, 10) !== iso ? null : iso;
}

/** A JSON.parse error message without the input it quotes (V8 quotes up to ~30 characters of
 *  the record, which may be PHI; the quarantine table must not hold raw identifiers). */
export function jsonErrorDetail(e: unknown): string {
  const m = (e as Error)?.message ?? String(e);
  return m.replace(/^Unexpected token '.+?', /u, 'Unexpected token, ').replace(/"[\s\S]*? is not valid JSON$/u, 'input is not valid JSON');
}

export class RecordSink {
  readonly counts: SinkCounts = { accepted: 0, duplicates: 0, quarantined: 0, byReason: {}, phiSpans: {}, nearDuplicates: 0, merged: 0 };
  private readonly clean: Cleaner;
  private readonly fields: IngestFields;
  private pending = 0;
  private inTx = false;

  constructor(
    private readonly store: SiteDataStore,
    private readonly cfg: DataConfig,
    private readonly key: Buffer,
    private readonly deid: Deidentifier | null, // null only when explicitly disabled (recorded)
    private readonly runId: number,
    /** FHIR input has no column mapping; messages name FHIR elements instead. */
    private readonly fhir = false,
  ) {
    this.clean = makeCleaner(cfg.cleaning);
    this.fields = new IngestFields(store.db, cfg.fields);
  }

  private begin(): void {
    if (!this.inTx) {
      this.store.db.exec('BEGIN');
      this.inTx = true;
    }
  }

  /** Commit what is pending. Called at the end of every file and before reporting. */
  flush(): void {
    if (this.inTx) {
      this.store.db.exec('COMMIT');
      this.inTx = false;
      this.pending = 0;
    }
  }

  private tick(): void {
    if (++this.pending >= BATCH) this.flush();
  }

  /** Run a write inside the current batch transaction (FHIR staging uses it). */
  write<T>(fn: () => T): T {
    this.begin();
    const r = fn();
    this.tick();
    return r;
  }

  /** `key` makes the quarantine entry idempotent (file hash + position). */
  quarantine(reason: string, source: string, detail: string, key: string): void {
    this.begin();
    this.store.addQuarantine({ reason, source, detail, runId: this.runId }, key);
    this.counts.quarantined++;
    this.counts.byReason[reason] = (this.counts.byReason[reason] ?? 0) + 1;
    this.tick();
  }

  /** Clean, check, hash, extract fields, de-identify and store one record ('duplicate' also for a merged near-copy). */
  accept(raw: MappedFields, source: string, qkey: string): 'accepted' | 'duplicate' | 'quarantined' {
    const f: MappedFields = {};
    for (const [k, v] of Object.entries(raw) as [MappableField, string | undefined][]) {
      if (v === undefined || v === null) continue;
      const t = k === 'patientId' ? String(v).trim() : this.clean(String(v));
      if (t !== '') f[k] = t;
    }
    const missing = this.cfg.required.filter((r) => f[r] === undefined);
    if (missing.length) {
      const hint = (m: MappableField) => (this.fhir ? `${m} (${FHIR_SOURCES[m] ?? 'FHIR'})` : `${m} (data.mapping.${m} = ${JSON.stringify(this.cfg.mapping[m])})`);
      this.quarantine('missing_field', source, `missing required field(s): ${missing.map(hint).join(', ')} (required: data.required)`, qkey);
      return 'quarantined';
    }
    for (const d of ['admissionDate', 'dischargeDate'] as const) {
      if (f[d] === undefined) continue;
      const iso = toIsoDate(f[d]!);
      if (!iso) {
        // The value itself is not quoted: a date is an identifier.
        this.quarantine('invalid_field', source, `${d} is not a valid calendar date (expected yyyy-mm-dd, yyyy/mm/dd or yyyy年m月d日)`, qkey);
        return 'quarantined';
      }
      f[d] = iso;
    }
    const rawPatient = f.patientId ?? `anonymous:${source}`;
    const patientKey = patientPseudonym(this.key, rawPatient);
    const lang: 'zh' | 'en' =
      f.lang === 'zh' || f.lang === 'en'
        ? f.lang
        : this.cfg.defaultLang !== 'auto'
          ? this.cfg.defaultLang
          : hasCjk(`${f.chiefComplaint ?? ''}${f.history ?? ''}${f.diagnosis ?? ''}`) ? 'zh' : 'en';

    // The id hashes the cleaned source content (before de-identification, whose placeholders
    // could make different records equal), keyed so it reveals nothing about the content.
    const canonical = JSON.stringify([rawPatient, ...TEXT_FIELDS.map((k) => f[k] ?? null), f.admissionDate ?? null, f.dischargeDate ?? null]);
    const id = recordHash(this.key, canonical);
    if (this.store.hasRecord(id)) {
      this.counts.duplicates++;
      return 'duplicate';
    }
    const fields = this.fields.read(f);
    if (fields && 'drop' in fields) {
      this.quarantine('missing_value', source, fields.drop, qkey);
      return 'quarantined';
    }

    const rec: CaseRecord = { id, patientKey, lang };
    for (const k of TEXT_FIELDS) if (f[k] !== undefined) rec[k] = f[k];
    const sex = normalizeSex(f.sex), band = ageBand(f.age);
    if (sex) rec.sex = sex;
    if (band) rec.ageBand = band;
    if (this.deid) {
      const names = f.patientName ? [f.patientName] : [];
      for (const k of DEID_FIELDS) {
        if (rec[k] === undefined) continue;
        const r = this.deid.text(rec[k]!, patientKey, names);
        rec[k] = r.text;
        for (const s of r.spans) this.counts.phiSpans[s.type] = (this.counts.phiSpans[s.type] ?? 0) + 1;
      }
      if (f.admissionDate) rec.admissionDate = this.deid.shiftDate(f.admissionDate, patientKey);
      if (f.dischargeDate) rec.dischargeDate = this.deid.shiftDate(f.dischargeDate, patientKey);
    } else {
      if (f.admissionDate) rec.admissionDate = f.admissionDate;
      if (f.dischargeDate) rec.dischargeDate = f.dischargeDate;
    }
    this.begin();
    const near = this.fields.nearDuplicates(recordText(rec), patientKey);
    if (near.mergeInto) {
      this.fields.saveMerged(id, near, fields, source, this.runId);
      this.counts.merged++;
      this.tick();
      return 'duplicate';
    }
    const inserted = this.store.insertRecord(rec, source, this.runId);
    if (inserted) {
      this.fields.save(id, patientKey, fields, near, source, this.runId);
      this.counts.nearDuplicates += near.pairs.length;
    }
    this.tick();
    if (inserted) this.counts.accepted++;
    else this.counts.duplicates++;
    return inserted ? 'accepted' : 'duplicate';
  }

  /** Roll back nothing: what was accepted is valid; commit it and let the error propagate. */
  close(): void {
    this.flush();
  }
}
