// Canaries for the empirical privacy audit (`fedlora privacy audit`): unique random sequences of
// a documented format, planted in one synthetic hospital's records, whose exposure on a published
// adapter measures how much of one hospital's rare details the model memorised (Carlini et al.,
// "The Secret Sharer", USENIX Security 2019).
//
// Format: a template where each `#` is one random decimal digit, e.g. "Reference code ##-####"
// (10^6 candidates). A canary is the template with its digits filled in; the candidate space of
// the audit is every filling of the same template. Canaries go at the end of the record's
// treatment, which the training examples put in the assistant's answer (the tokens the engine
// learns from); the de-identifier leaves such codes alone (checked by the audit, which counts
// the copies of each canary in the site's training file).

import { fail } from '../../../shared/errors.ts';
import { Rng } from '../../../shared/prng.ts';
import type { SynthRecord } from './generate.ts';

export const DEFAULT_CANARY_FORMAT = 'Reference code ##-####';

export interface CanaryFormat {
  template: string;
  /** Number of `#` digits: the candidate space holds 10^digits sequences. */
  digits: number;
}

/** Check a canary template: 2..15 `#` digits (10^15 stays an exact double) and some fixed text. */
export function parseCanaryFormat(template: string): CanaryFormat {
  const digits = [...template].filter((c) => c === '#').length;
  if (digits < 2 || digits > 15) {
    throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `canary format "${template}": needs 2 to 15 '#' (one random digit each), has ${digits}`);
  }
  if (template.replace(/#/g, '').trim() === '') throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `canary format "${template}": needs fixed text around the '#' digits`);
  return { template, digits };
}

export const candidateSpace = (f: CanaryFormat): number => 10 ** f.digits;

/** The template with `secret` (exactly f.digits decimal digits) in place of the `#`s. */
export function fillCanary(f: CanaryFormat, secret: string): string {
  if (secret.length !== f.digits || !/^\d+$/.test(secret)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `canary secret "${secret}": expected ${f.digits} digits`);
  let i = 0;
  return f.template.replace(/#/g, () => secret[i++]);
}

/** A uniformly random secret of the format. */
export function randomSecret(f: CanaryFormat, rng: Rng): string {
  let s = '';
  for (let i = 0; i < f.digits; i++) s += String(rng.nextInt(10));
  return s;
}

export interface CanaryPlan {
  /** Template (see the file comment); default DEFAULT_CANARY_FORMAT. */
  format?: string;
  count: number;
  /** Records of the site that carry each canary (each a different record). */
  repetitions: number;
  /** Index of the site whose records carry the canaries (default 0: the first hospital). */
  site?: number;
  seed?: number;
}

export interface PlantedCanary {
  /** The full canary text as it appears in the records. */
  text: string;
  secret: string;
  /** Indices of the site's records that carry it. */
  records: number[];
}

/** Distinct random secrets, reproducible for a seed. */
export function canarySecrets(f: CanaryFormat, count: number, seed: number): string[] {
  if (count > candidateSpace(f) / 100) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `${count} canaries of "${f.template}": at most 1% of its ${candidateSpace(f)} sequences`);
  const rng = Rng.derive(seed, 'canary secrets', f.template);
  const out = new Set<string>();
  while (out.size < count) out.add(randomSecret(f, rng));
  return [...out];
}

/** Append each canary to the treatment of `repetitions` different records (chosen at random). */
export function plantCanaries(records: SynthRecord[], plan: CanaryPlan): PlantedCanary[] {
  const f = parseCanaryFormat(plan.format ?? DEFAULT_CANARY_FORMAT);
  const seed = plan.seed ?? 1;
  if (!Number.isInteger(plan.count) || plan.count < 1) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `canaries: count must be an integer >= 1, got ${plan.count}`);
  if (!Number.isInteger(plan.repetitions) || plan.repetitions < 1) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `canaries: repetitions must be an integer >= 1, got ${plan.repetitions}`);
  if (plan.count * plan.repetitions > records.length) {
    throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `canaries: ${plan.count} x ${plan.repetitions} copies need as many records, the site has ${records.length}`);
  }
  const order = Rng.derive(seed, 'canary records').shuffle(records.map((_, i) => i));
  return canarySecrets(f, plan.count, seed).map((secret, k) => {
    const text = fillCanary(f, secret);
    const at = order.slice(k * plan.repetitions, (k + 1) * plan.repetitions).sort((a, b) => a - b);
    for (const i of at) records[i].treatment = `${records[i].treatment.replace(/\s+$/, '')} ${text}.`;
    return { text, secret, records: at };
  });
}
