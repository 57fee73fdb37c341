// `fedlora eval exam` as a person reads it: accuracy with its 95% interval, overall and per subject,
// for each way of scoring; answer latency p50/p95; calibration of the option probabilities.
import { parseSubset } from '../shared/metric-subset.ts';

interface Fig { name: string; subset: string; value: number; count: number; ci?: [number, number] | null }

const p3 = (v: number) => v.toFixed(3);
const ci = (f: Fig | undefined) => (f?.ci ? `[${p3(f.ci[0])}, ${p3(f.ci[1])}]` : '');
/** Terminal columns of a string: CJK and full-width characters take two. */
const width = (s: string) => [...s].reduce((a, c) => a + (/[\u1100-\u115f\u2e80-\ua4cf\uac00-\ud7a3\uf900-\ufaff\ufe30-\ufe4f\uff00-\uff60\uffe0-\uffe6]/.test(c) ? 2 : 1), 0);
const ms = (v: number | undefined) => (v === undefined ? '–' : v >= 100 ? `${v.toFixed(0)} ms` : `${v.toFixed(1)} ms`);

export function examTable(exam: string, questions: number, model: string, figs: Fig[]): string {
  const get = (name: string, subset = '') => figs.find((f) => f.name === name && f.subset === subset);
  const rows: string[][] = [];
  for (const [acc, label] of [['accuracy', 'log-likelihood'], ['generation_accuracy', 'generation']] as const) {
    const all = get(acc);
    if (!all) continue;
    rows.push([label, p3(all.value), ci(all), String(all.count)]);
    for (const f of figs.filter((x) => x.name === acc && x.subset !== '')) rows.push([`  ${parseSubset(f.subset).subject}`, p3(f.value), ci(f), String(f.count)]);
  }
  const head = ['', 'accuracy', '95% CI', 'n'];
  const w = head.map((h, i) => Math.max(width(h), ...rows.map((r) => width(r[i]))));
  const line = (r: string[]) => r.map((c, i) => c + ' '.repeat(w[i] - width(c))).join('  ').trimEnd();
  const out = [`exam ${exam}: ${questions} questions, ${model}`, line(head), ...rows.map(line)];
  const un = get('generation_unanswered');
  if (un) out.push(`generation: ${p3(un.value)} of answers name no option ${ci(un)}`);
  const lat = [['latency', 'log-likelihood'], ['generation_latency', 'generation']].filter(([k]) => get(`${k}_p50_ms`))
    .map(([k, l]) => `${l} p50 ${ms(get(`${k}_p50_ms`)?.value)} / p95 ${ms(get(`${k}_p95_ms`)?.value)}`);
  if (lat.length) out.push(`time to a complete answer: ${lat.join('; ')}`);
  const ece = get('ece'), brier = get('brier');
  if (ece && brier) out.push(`calibration of the option probabilities: ECE ${p3(ece.value)} ${ci(ece)}, Brier ${p3(brier.value)} ${ci(brier)}`);
  return out.join('\n') + '\n';
}
