// The `data:` section of the site config: how the hospital's export maps onto case fields,
// cleaning, de-identification, splits and prompts. The defaults fit the output of
// `fedlora synth` so a fresh site can ingest synthetic data with no config at all.
//
// The federation's SiteConfigSchema embeds DataConfigSchema as its `data` field.

import { z } from 'zod';
import { fail } from '../../shared/errors.ts';
import { describeZodError } from '../../shared/zod-errors.ts';
import { DEFAULT_FIELDS_CONFIG, FieldsConfigSchema } from './extract/missing-policy.ts';

/** Case fields a source column can map to (CaseRecord fields + the raw patient identity). */
export const MAPPABLE_FIELDS = [
  'patientId', 'patientName', 'department', 'chiefComplaint', 'history', 'exam', 'labs',
  'diagnosis', 'icd10', 'treatment', 'admissionDate', 'dischargeDate', 'lang', 'sex', 'age',
] as const;
export type MappableField = (typeof MAPPABLE_FIELDS)[number];

/** Free-text fields of a case (cleaned, de-identified). */
export const TEXT_FIELDS = ['department', 'chiefComplaint', 'history', 'exam', 'labs', 'diagnosis', 'icd10', 'treatment'] as const;

/** The text of a record that examples are built from (all text fields, one per line). */
export const recordText = (r: Partial<Record<(typeof TEXT_FIELDS)[number], string>>): string => TEXT_FIELDS.map((f) => r[f]).filter(Boolean).join('\n');

const DEFAULT_MAPPING: Record<MappableField, string> = {
  patientId: 'patient_id',
  patientName: 'patient_name',
  department: 'department',
  chiefComplaint: 'chief_complaint',
  history: 'history',
  exam: 'exam',
  labs: 'labs',
  diagnosis: 'diagnosis',
  icd10: 'icd10',
  treatment: 'treatment',
  admissionDate: 'admission_date',
  dischargeDate: 'discharge_date',
  lang: 'lang',
  // Subgroup fields: only the sex (F/M) and a 20-year age band are stored, never the age itself.
  sex: 'sex',
  age: 'age',
};

/** Default abbreviation table (applied to free text; Latin forms match whole words, any case). */
export const DEFAULT_ABBREVIATIONS: Record<string, string> = {
  'b.i.d.': 'twice daily',
  'bid': 'twice daily',
  't.i.d.': 'three times daily',
  'tid': 'three times daily',
  'q.i.d.': 'four times daily',
  'q.d.': 'every day',
  'qd': 'every day',
  'q.h.s.': 'at bedtime',
  'p.r.n.': 'as needed',
  'prn': 'as needed',
  'p.o.': 'by mouth',
  'SOB': 'shortness of breath',
  'MI': 'myocardial infarction',
  'HTN': 'hypertension',
  'DM': 'diabetes mellitus',
  'T2DM': 'type 2 diabetes mellitus',
  'COPD': 'chronic obstructive pulmonary disease',
  '心梗': '心肌梗死',
  '高血压病': '高血压',
  '糖尿病2型': '2型糖尿病',
  '慢阻肺': '慢性阻塞性肺疾病',
  '脑梗': '脑梗死',
  '冠心病': '冠状动脉粥样硬化性心脏病',
  '房颤': '心房颤动',
};

const FieldMappingSchema = z
  .object(Object.fromEntries(MAPPABLE_FIELDS.map((f) => [f, z.string().min(1).nullable().default(DEFAULT_MAPPING[f])])) as Record<MappableField, z.ZodDefault<z.ZodNullable<z.ZodString>>>)
  .strict();

export const DataConfigSchema = z
  .object({
    /** Source column / JSON key per case field (JSON keys may be dotted paths: "visit.cc"). null = not present. */
    mapping: FieldMappingSchema.default(FieldMappingSchema.parse({})),
    /** A record without any of these (after mapping and cleaning) is quarantined as missing_field. */
    required: z.array(z.enum(MAPPABLE_FIELDS)).default(['patientId', 'chiefComplaint', 'diagnosis']),
    /** Text encoding of CSV/JSONL/NDJSON input. */
    encoding: z.enum(['utf-8', 'gb18030', 'gbk']).default('utf-8'),
    csv: z
      .object({ delimiter: z.string().length(1).default(','), quote: z.string().length(1).default('"') })
      .strict()
      .default({ delimiter: ',', quote: '"' }),
    /** Language when the record has no lang column: auto = CJK characters → zh. */
    defaultLang: z.enum(['auto', 'zh', 'en']).default('auto'),
    /** Records (CSV row, JSONL line, FHIR entry) larger than this are quarantined as too_large. */
    maxRecordBytes: z.number().int().min(1024).default(1024 * 1024),
    cleaning: z
      .object({
        nfkc: z.boolean().default(true),
        collapseWhitespace: z.boolean().default(true),
        /** Replaces the defaults entirely when given; `extraAbbreviations` adds to them. */
        abbreviations: z.record(z.string(), z.string()).default(DEFAULT_ABBREVIATIONS),
        extraAbbreviations: z.record(z.string(), z.string()).default({}),
      })
      .strict()
      .default({ nfkc: true, collapseWhitespace: true, abbreviations: DEFAULT_ABBREVIATIONS, extraAbbreviations: {} }),
    deid: z
      .object({
        /** Turning this off needs `enabled: false` AND `i_understand_records_keep_phi: true`; it is recorded and printed. */
        enabled: z.boolean().default(true),
        i_understand_records_keep_phi: z.boolean().default(false),
        mode: z.enum(['placeholder', 'pseudonym']).default('placeholder'),
        /** Secret key file (HMAC pseudonyms, date shifts); relative to the site dir; created 0600 if absent. */
        keyFile: z.string().min(1).default('secrets/deid.key'),
      })
      .strict()
      .default({ enabled: true, i_understand_records_keep_phi: false, mode: 'placeholder', keyFile: 'secrets/deid.key' }),
    split: z
      .object({
        seed: z.number().int().default(1234),
        train: z.number().min(0).max(1).default(0.8),
        validation: z.number().min(0).max(1).default(0.1),
        test: z.number().min(0).max(1).default(0.1),
      })
      .strict()
      .refine((s) => Math.abs(s.train + s.validation + s.test - 1) < 1e-6, { message: 'split.train + split.validation + split.test must be 1' })
      .default({ seed: 1234, train: 0.8, validation: 0.1, test: 0.1 }),
    prompt: z
      .object({
        /** auto = each example in its record's language. */
        lang: z.enum(['auto', 'zh', 'en']).default('auto'),
        system: z.string().nullable().default(null),
        /** Templates with {{field}} placeholders; null = built-in template of the language. */
        userTemplate: z.string().nullable().default(null),
        assistantTemplate: z.string().nullable().default(null),
      })
      .strict()
      .default({ lang: 'auto', system: null, userTemplate: null, assistantTemplate: null }),
    /** Structured fields read from the free text at ingest, their missing-value policy, near-duplicates (site-agent/data/extract/). */
    fields: FieldsConfigSchema.default(DEFAULT_FIELDS_CONFIG),
    choices: z
      .object({
        /** Options per multiple-choice item (the right diagnosis + K-1 distractors). */
        k: z.number().int().min(2).max(10).default(4),
        /** Extra diagnoses to draw distractors from when the site knows fewer than k. */
        extraDiagnoses: z.array(z.string()).default([]),
        /** How an item asks: 'list' = the case, the lettered options and "answer with the letter";
         *  'cloze' = the case exactly as in training, each option scored as the answer that follows
         *  (what a small model trained to answer with the diagnosis can be judged on). */
        format: z.enum(['list', 'cloze']).default('list'),
      })
      .strict()
      .default({ k: 4, extraDiagnoses: [], format: 'list' }),
  })
  .strict();

export type DataConfig = z.infer<typeof DataConfigSchema>;

/** Validate a data section; errors name the file and field path. */
export function parseDataConfig(raw: unknown, file = 'data config'): DataConfig {
  const r = DataConfigSchema.safeParse(raw ?? {});
  if (!r.success) throw fail('FEDLORA_ERR_CONFIG', describeZodError(file, r.error, undefined, ['data']));
  return r.data;
}

export const defaultDataConfig = (): DataConfig => parseDataConfig({});
