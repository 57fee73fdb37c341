// FHIR R4 input: Bundles (one JSON file each, streamed entry by entry) or NDJSON (one resource
// or one Bundle per line, e.g. a bulk export with Patient.ndjson, Encounter.ndjson, ...).
// Resources are staged in SQLite first (so resources of one export may come in any order and
// in any file, without holding them in memory), then joined per Encounter into one case:
//   Patient (id, name, gender, birthDate -> age band at the encounter) + Encounter (department, reason, dates) + Condition (diagnosis, ICD-10)
//   + Observation (labs, narratives) + MedicationRequest/Procedure (treatment).
// Other resource types (Claim, Immunization, ...) are IGNORED and counted per type in the
// summary; entries that are not resources at all are quarantined as fhir_invalid.

import { ageAt } from './subgroups.ts';
import { statSync, readFileSync } from 'node:fs';
import type { DataConfig } from '../config-schema.ts';
import type { SiteDataStore } from '../store.ts';
import type { RecordSink, MappedFields } from './sink.ts';
import { jsonErrorDetail } from './sink.ts';
import { streamBundleEntries } from './json-entries.ts';
import { readLines } from './lines.ts';

const USED_TYPES = new Set(['Patient', 'Encounter', 'Condition', 'Observation', 'MedicationRequest', 'Procedure']);
// NDJSON lines may hold whole Bundles (a Synthea patient is several MB), so a line may be larger
// than one record; entries inside are still limited. Bigger Bundles belong in their own .json
// file, which is streamed entry by entry.
const MAX_BUNDLE_LINE = 64 * 1024 * 1024;

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** 'urn:uuid:x', 'Patient/x', 'https://h/fhir/Patient/x', 'Patient/x/_history/2' → 'x'. */
function refKey(ref: unknown): string | null {
  if (typeof ref !== 'string' || ref === '' || ref.startsWith('#')) return null;
  if (ref.startsWith('urn:uuid:') || ref.startsWith('urn:oid:')) return ref.slice(9);
  const parts = ref.split('?')[0].split('/');
  const h = parts.indexOf('_history');
  const p = h > 0 ? parts.slice(0, h) : parts;
  return p[p.length - 1] || null;
}

export class FhirStager {
  readonly ignored: Record<string, number> = {};
  staged = 0;
  private readonly insert;

  constructor(
    private readonly store: SiteDataStore,
    private readonly runId: number,
    private readonly sink: RecordSink,
    private readonly maxRecordBytes = Infinity,
  ) {
    this.insert = store.db.prepare(
      'INSERT INTO data_fhir_stage (run_id, type, rid, alias, patient_ref, encounter_ref, source, json) VALUES (?,?,?,?,?,?,?,?)',
    );
  }

  /** Stage one resource (or the entries of a nested Bundle). */
  add(resource: unknown, fullUrl: string | undefined, source: string, qkey: string): void {
    if (resource === null || typeof resource !== 'object' || Array.isArray(resource) || typeof (resource as Json).resourceType !== 'string') {
      this.sink.quarantine('fhir_invalid', source, 'entry has no resource with a resourceType', qkey);
      return;
    }
    const r = resource as Json;
    const type = r.resourceType as string;
    if (type === 'Bundle') {
      (Array.isArray(r.entry) ? r.entry : []).forEach((e: Json, i: number) => this.add(e?.resource, e?.fullUrl, `${source}/entry[${i}]`, `${qkey}/${i}`));
      return;
    }
    if (!USED_TYPES.has(type)) {
      this.ignored[type] = (this.ignored[type] ?? 0) + 1;
      return;
    }
    const patientRef = type === 'Patient' ? null : refKey(r.subject?.reference ?? r.patient?.reference);
    const encounterRef = refKey(r.encounter?.reference ?? r.context?.reference);
    const rid = typeof r.id === 'string' ? r.id : null;
    const alias = fullUrl ? refKey(fullUrl) : null;
    const where = `${source.replace(/\/entry\[\d+\]$/, '')}#${type}/${rid ?? alias ?? '?'}`;
    const json = JSON.stringify(r);
    if (json.length * 2 > this.maxRecordBytes) {
      this.sink.quarantine('too_large', source, `${type} resource is ${json.length} characters (limit data.maxRecordBytes = ${this.maxRecordBytes})`, qkey);
      return;
    }
    this.sink.write(() => this.insert.run(this.runId, type, rid, alias, patientRef, encounterRef, where, json));
    this.staged++;
  }
}

/** Stage one FHIR file (.json Bundle/resource, or .ndjson). */
export async function stageFhirFile(path: string, fileHash: string, cfg: DataConfig, stager: FhirStager, sink: RecordSink): Promise<void> {
  const ext = (path.split('.').pop() ?? '').toLowerCase();
  if (ext === 'ndjson' || ext === 'jsonl') {
    for await (const line of readLines(path, { maxLineBytes: Math.max(MAX_BUNDLE_LINE, cfg.maxRecordBytes) })) {
      const where = `${path}:${line.lineNo}`;
      const qkey = `${fileHash}:${line.lineNo}`;
      if (line.encodingError) sink.quarantine('encoding', where, line.encodingError, qkey);
      else if (line.oversizeBytes !== undefined) {
        sink.quarantine('too_large', where, `line is ${line.oversizeBytes} bytes (NDJSON lines up to ${MAX_BUNDLE_LINE} bytes; put a larger Bundle in its own .json file, which is streamed)`, qkey);
      }
      else if (line.text.trim() !== '') {
        if (line.text.length * 2 > cfg.maxRecordBytes && !line.text.includes('"Bundle"')) {
          sink.quarantine('too_large', where, `resource is ${line.text.length} characters (limit data.maxRecordBytes = ${cfg.maxRecordBytes})`, qkey);
          continue;
        }
        let obj: unknown;
        try {
          obj = JSON.parse(line.text);
        } catch (e) {
          sink.quarantine(line.terminated ? 'invalid_json' : 'truncated', where, jsonErrorDetail(e), qkey);
          continue;
        }
        stager.add(obj, undefined, where, qkey);
      }
    }
    return;
  }
  let sawEntries = false;
  for await (const ev of streamBundleEntries(path, Math.floor(cfg.maxRecordBytes / 2))) {
    if (ev.kind === 'entry') {
      sawEntries = true;
      const where = `${path}/entry[${ev.index}]`;
      const qkey = `${fileHash}:e${ev.index}`;
      let e: Json;
      try {
        e = JSON.parse(ev.text);
      } catch (err) {
        sink.quarantine('invalid_json', where, jsonErrorDetail(err), qkey);
        continue;
      }
      stager.add(e.resource, e.fullUrl, where, qkey);
    } else if (ev.kind === 'oversize') {
      sink.quarantine('too_large', `${path}/entry[${ev.index}]`, `entry is ${ev.bytes} characters (limit data.maxRecordBytes = ${cfg.maxRecordBytes})`, `${fileHash}:e${ev.index}`);
    } else {
      if (ev.badUtf8) sink.quarantine('encoding', path, 'file is not valid UTF-8 (FHIR JSON must be UTF-8); entries before the bad bytes were kept', `${fileHash}:enc`);
      else if (ev.truncated) sink.quarantine('truncated', path, `file ends before the JSON is complete (after ${ev.entries} complete entries, which were kept)`, `${fileHash}:trunc`);
      else if (!sawEntries) {
        // Not a Bundle with entries: a single resource file (or an empty/invalid document).
        const size = statSync(path).size;
        if (size > cfg.maxRecordBytes) {
          sink.quarantine('too_large', path, `single resource of ${size} bytes`, `${fileHash}:0`);
          return;
        }
        let obj: unknown;
        try {
          obj = JSON.parse(readFileSync(path, 'utf8').replace(/^\ufeff/, ''));
        } catch (err) {
          sink.quarantine('invalid_json', path, jsonErrorDetail(err), `${fileHash}:0`);
          return;
        }
        if (ev.rootType === 'Bundle') return; // an empty Bundle
        stager.add(obj, undefined, path, `${fileHash}:0`);
      }
    }
  }
}

const stripTag = (s: string): string => s.replace(/\s*\((disorder|finding|procedure|situation|morphologic abnormality|observable entity|regime\/therapy)\)\s*$/i, '').trim();

function conceptText(cc: Json | undefined): string | undefined {
  if (!cc) return undefined;
  const t = cc.text ?? cc.coding?.find((c: Json) => c.display)?.display;
  return typeof t === 'string' ? stripTag(t) : undefined;
}

const isIcd10 = (sys: unknown): boolean => typeof sys === 'string' && /icd-?10/i.test(sys);
const hasLoinc = (r: Json, code: string): boolean => (r.code?.coding ?? []).some((c: Json) => c.code === code && /loinc/i.test(c.system ?? ''));

function observationText(o: Json): string | undefined {
  const name = conceptText(o.code);
  let value: string | undefined;
  if (o.valueQuantity) value = `${o.valueQuantity.value}${o.valueQuantity.unit ? ' ' + o.valueQuantity.unit : ''}`;
  else if (o.valueCodeableConcept) value = conceptText(o.valueCodeableConcept);
  else if (o.valueString !== undefined) value = String(o.valueString);
  else if (Array.isArray(o.component)) {
    value = o.component.map((c: Json) => `${conceptText(c.code) ?? ''} ${c.valueQuantity?.value ?? ''}${c.valueQuantity?.unit ? ' ' + c.valueQuantity.unit : ''}`.trim()).join(', ');
  }
  if (value === undefined) return undefined;
  const flag = o.interpretation?.[0]?.coding?.[0]?.code;
  return `${name ?? 'observation'}: ${value}${flag && flag !== 'N' ? ` (${flag})` : ''}`;
}

/** Join the staged resources per Encounter and feed one case per encounter to the sink. */
export function assembleFhirCases(store: SiteDataStore, runId: number, sink: RecordSink): { encounters: number; orphans: number } {
  const db = store.db;
  const pageStmt = db.prepare("SELECT rowid AS rowid, rid, alias, json, source FROM data_fhir_stage WHERE run_id = ? AND type = 'Encounter' AND rowid > ? ORDER BY rowid LIMIT 200");
  const patientStmt = db.prepare("SELECT json FROM data_fhir_stage WHERE run_id = ? AND type = 'Patient' AND (rid = ? OR alias = ?) LIMIT 1").pluck();
  const linkedStmt = db.prepare('SELECT type, json FROM data_fhir_stage WHERE run_id = ? AND encounter_ref IN (?, ?)');
  let last = 0;
  let encounters = 0;
  for (;;) {
    const page = pageStmt.all(runId, last) as { rowid: number; rid: string | null; alias: string | null; json: string; source: string }[];
    if (page.length === 0) break;
    for (const row of page) {
      last = row.rowid;
      encounters++;
      const enc = JSON.parse(row.json) as Json;
      const k1 = row.rid ?? row.alias ?? '';
      const k2 = row.alias ?? row.rid ?? '';
      const qkey = `fhir:${row.source}`;
      const patKey = refKey(enc.subject?.reference ?? enc.patient?.reference);
      const patJson = patKey ? (patientStmt.get(runId, patKey, patKey) as string | undefined) : undefined;
      if (!patJson) {
        sink.quarantine('fhir_unresolved_reference', row.source, `Encounter.subject ${JSON.stringify(enc.subject?.reference ?? null)} does not resolve to a Patient in this ingest (pass all files of the export in one command)`, qkey);
        continue;
      }
      const pat = JSON.parse(patJson) as Json;
      const linked = (linkedStmt.all(runId, k1, k2) as { type: string; json: string }[]).map((l) => ({ type: l.type, r: JSON.parse(l.json) as Json }));
      sink.accept(encounterCase(enc, pat, linked), row.source, qkey);
    }
  }
  const orphans = db
    .prepare("SELECT count(*) FROM data_fhir_stage s WHERE run_id = ? AND type NOT IN ('Patient','Encounter') AND NOT EXISTS (SELECT 1 FROM data_fhir_stage e WHERE e.run_id = s.run_id AND e.type = 'Encounter' AND (e.rid = s.encounter_ref OR e.alias = s.encounter_ref))")
    .pluck()
    .get(runId) as number;
  db.prepare('DELETE FROM data_fhir_stage WHERE run_id = ?').run(runId);
  return { encounters, orphans };
}

/** One encounter and what links to it → mapped case fields. */
function encounterCase(enc: Json, pat: Json, linked: { type: string; r: Json }[]): MappedFields {
  const of = (t: string) => linked.filter((l) => l.type === t).map((l) => l.r);
  const mrn = (pat.identifier ?? []).find((i: Json) => i.type?.coding?.some((c: Json) => c.code === 'MR'))?.value;
  const n = pat.name?.[0];
  const name = n ? (n.text ?? [...(n.given ?? []), n.family].filter(Boolean).join(' ')) : undefined;
  const conditions = of('Condition');
  const dx = conditions.find((c) => c.code?.coding?.some((x: Json) => isIcd10(x.system))) ?? conditions[0];
  const icd = dx?.code?.coding?.find((x: Json) => isIcd10(x.system))?.code;
  const obs = of('Observation');
  const narrative = (codes: string[]) =>
    obs.filter((o) => codes.some((c) => hasLoinc(o, c)) && typeof o.valueString === 'string').map((o) => o.valueString as string).join('\n') || undefined;
  const NARR = ['10154-3', '10164-2', '11348-0', '29545-1'];
  const labs = obs
    .filter((o) => !NARR.some((c) => hasLoinc(o, c)))
    .map(observationText)
    .filter(Boolean)
    .join('; ');
  const meds = of('MedicationRequest').map((m) => {
    const drug = conceptText(m.medicationCodeableConcept) ?? m.medicationReference?.display;
    const dose = m.dosageInstruction?.[0]?.text;
    return [drug, dose].filter(Boolean).join(' ');
  });
  const procs = of('Procedure').map((p) => conceptText(p.code)).filter(Boolean) as string[];
  const reasons = (enc.reasonCode ?? []).map(conceptText).filter(Boolean).join('; ');
  const lang = typeof pat.communication?.[0]?.language?.coding?.[0]?.code === 'string' && pat.communication[0].language.coding[0].code.startsWith('zh') ? 'zh' : undefined;
  const f: MappedFields = {
    patientId: mrn ?? pat.id,
    patientName: name,
    department: conceptText(enc.serviceType) ?? conceptText(enc.type?.[0]),
    chiefComplaint: narrative(['10154-3']) ?? (reasons || undefined),
    history: narrative(['10164-2', '11348-0']),
    exam: narrative(['29545-1']),
    labs: labs || undefined,
    diagnosis: conceptText(dx?.code),
    icd10: icd,
    treatment: [...meds, ...procs].join('; ') || undefined,
    admissionDate: typeof enc.period?.start === 'string' ? enc.period.start.slice(0, 10) : undefined,
    sex: typeof pat.gender === 'string' ? pat.gender : undefined,
    age: ageAt(pat.birthDate, enc.period?.start)?.toString(),
    dischargeDate: typeof enc.period?.end === 'string' ? enc.period.end.slice(0, 10) : undefined,
    lang,
  };
  for (const k of Object.keys(f) as (keyof MappedFields)[]) if (f[k] === undefined) delete f[k];
  return f;
}
