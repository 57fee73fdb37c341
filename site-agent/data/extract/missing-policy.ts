// The missing-value policy of the extracted fields, per field in the data config:
//   data.fields.missing.<field>: keep            (the default: the typed column stays NULL)
//                                drop            (the record is quarantined as missing_value, naming the field)
//                                {impute: normal} (the middle of the adult reference interval, catalog.ts `normal`)
//                                {impute: 6.5}    (a constant, in the field's canonical unit)
//   data.fields.missing.medications: keep | drop  (drop: a record with no medication found)
// An imputed value is listed in data_record_fields.imputed, so it is never taken for a measurement.
import { z } from 'zod';
import { FIELDS, FIELD_KEYS, type FieldKey } from './catalog.ts';

const Policy = z.union([
  z.enum(['keep', 'drop']),
  z.object({ impute: z.union([z.literal('normal'), z.number().finite()]) }).strict(),
]);
type FieldPolicy = z.infer<typeof Policy>;

const KNOWN = [...FIELD_KEYS, 'medications'];

export const FieldsConfigSchema = z
  .object({
    /** Read vital signs, labs and medications from the free text into typed columns at ingest. */
    extract: z.boolean().default(true),
    missing: z
      .record(z.string(), Policy)
      .default({})
      .superRefine((m, ctx) => {
        for (const [k, p] of Object.entries(m)) {
          if (!KNOWN.includes(k)) ctx.addIssue({ code: 'custom', path: [k], message: `unknown field "${k}"; the fields are ${KNOWN.join(', ')}` });
          else if (k === 'medications' && typeof p === 'object') ctx.addIssue({ code: 'custom', path: [k], message: 'medications cannot be imputed: use keep or drop' });
          else if (typeof p === 'object' && typeof p.impute === 'number') {
            const [lo, hi] = FIELDS[k as FieldKey].plausible;
            if (p.impute < lo || p.impute > hi) ctx.addIssue({ code: 'custom', path: [k, 'impute'], message: `${p.impute} is outside the plausible ${FIELDS[k as FieldKey].unit} range ${lo}..${hi} of ${k}` });
          }
        }
      }),
    near_duplicates: z
      .object({
        /** Jaccard estimate (MinHash) at or above which two records are near-duplicates. */
        threshold: z.number().min(0.5).max(1).default(0.85),
        /** Do not store a near-duplicate of the same patient's stored record (counted and listed
         *  instead); its measured fields fill the ones the stored record lacks. */
        merge: z.boolean().default(false),
      })
      .strict()
      .default({ threshold: 0.85, merge: false }),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.extract) return;
    for (const [k, p] of Object.entries(c.missing)) {
      if (p !== 'keep') ctx.addIssue({ code: 'custom', path: ['missing', k], message: `a missing-value policy for ${k} needs data.fields.extract: true (nothing is read from the text)` });
    }
  });
export type FieldsConfig = z.infer<typeof FieldsConfigSchema>;
export const DEFAULT_FIELDS_CONFIG: FieldsConfig = FieldsConfigSchema.parse({});

export interface PolicyOutcome {
  values: Partial<Record<FieldKey, number>>;
  imputed: FieldKey[];
  /** The field whose `drop` policy rejects the record. */
  dropFor: FieldKey | 'medications' | null;
}

export function applyMissingPolicy(values: Partial<Record<FieldKey, number>>, medications: number, missing: Record<string, FieldPolicy>): PolicyOutcome {
  const out = { ...values };
  const imputed: FieldKey[] = [];
  for (const [k, p] of Object.entries(missing)) {
    if (k === 'medications') {
      if (p === 'drop' && medications === 0) return { values, imputed: [], dropFor: 'medications' };
      continue;
    }
    const f = k as FieldKey;
    if (out[f] !== undefined || p === 'keep') continue;
    if (p === 'drop') return { values, imputed: [], dropFor: f };
    out[f] = p.impute === 'normal' ? FIELDS[f].normal : p.impute;
    imputed.push(f);
  }
  return { values: out, imputed, dropFor: null };
}
