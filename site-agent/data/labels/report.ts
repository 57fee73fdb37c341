// The labels part of `fedlora site data report`: labels by kind, records by status, Cohen's kappa
// per doctor pair and overall on the double-read records, the adjudication queue, how often
// doctors chose the model's top suggestion when it was shown and when it was hidden (suggestion
// bias), and the label sources of the training sets built for rounds. Stays at the site.
import type Database from 'better-sqlite3-multiple-ciphers';
import { wilson } from '../../eval/safety/stats.ts';
import { cohenKappa, type Kappa } from './kappa.ts';
import { latestReads, type LabelKind, type LabelStatus, type StatusEntry } from './status.ts';

export interface AgreementRate {
  n: number;
  agreed: number;
  rate: number | null;
  /** 95% Wilson interval of the rate. */
  ci: [number, number];
}

export interface LabelReport {
  entries: Record<LabelKind, number>;
  records: Record<LabelStatus, number>;
  /** Records in dispute, waiting for adjudication. */
  adjudicationQueue: number;
  /** Cohen's kappa on records read by two doctors: per pair, and overall (first vs second reader). */
  agreement: { pairs: (Kappa & { doctors: [string, string] })[]; overall: Kappa };
  /** Reads from the queues where showing the suggestions is randomised: agreement with the model's top suggestion. */
  suggestions: { shown: AgreementRate; hidden: AgreementRate };
  trainingSets: { id: number; jobId: string | null; round: number | null; policy: string; createdAt: string; counts: TrainingSetCounts }[];
}

/** Per split, how many examples came from each label source; `excluded` counts records left out. */
export interface TrainingSetCounts {
  splits: Record<string, Record<string, number>>;
  excluded: Record<string, number>;
}

const rate = (agreed: number, n: number): AgreementRate => ({ n, agreed, rate: n ? agreed / n : null, ci: wilson(agreed, n) });

function agreement(db: Database.Database): LabelReport['agreement'] {
  const rows = db.prepare(`SELECT e.record_id, e.id, e.kind, e.user_name AS user, e.dx_key AS key FROM label_entries e
      JOIN label_records lr ON lr.record_id = e.record_id WHERE lr.needed = 2 AND e.kind = 'annotation' ORDER BY e.record_id, e.id`).all() as (StatusEntry & { record_id: string })[];
  const byRecord = new Map<string, StatusEntry[]>();
  for (const r of rows) byRecord.set(r.record_id, [...(byRecord.get(r.record_id) ?? []), r]);
  const pairItems = new Map<string, [string, string][]>();
  const overall: [string, string][] = [];
  for (const entries of byRecord.values()) {
    const reads = latestReads(entries);
    if (reads.length < 2) continue;
    overall.push([reads[0].key, reads[1].key]);
    for (let i = 0; i < reads.length; i++) {
      for (let j = i + 1; j < reads.length; j++) {
        const [x, y] = reads[i].user < reads[j].user ? [reads[i], reads[j]] : [reads[j], reads[i]];
        const k = JSON.stringify([x.user, y.user]);
        pairItems.set(k, [...(pairItems.get(k) ?? []), [x.key, y.key]]);
      }
    }
  }
  const pairs = [...pairItems].sort((a, b) => (a[0] < b[0] ? -1 : 1)).map(([k, items]) => ({ doctors: JSON.parse(k) as [string, string], ...cohenKappa(items) }));
  return { pairs, overall: cohenKappa(overall) };
}

function suggestionBias(db: Database.Database): LabelReport['suggestions'] {
  const rows = db.prepare(`SELECT e.record_id, e.id, e.kind, e.user_name AS user, e.dx_key AS key, e.queue, e.suggestion_shown AS shown, s.top_key
      FROM label_entries e JOIN label_suggestions s ON s.id = e.suggestion_id WHERE e.kind = 'annotation' ORDER BY e.id`).all() as (StatusEntry & { record_id: string; queue: string; shown: 0 | 1; top_key: string })[];
  const latest = new Map<string, (typeof rows)[number]>();
  for (const r of rows) latest.set(`${r.record_id}\u0000${r.user}`, r);
  const t = { shown: [0, 0], hidden: [0, 0] };
  for (const r of latest.values()) {
    if (r.queue === 'disagree') continue; // always shown there: not part of the comparison
    const side = r.shown ? t.shown : t.hidden;
    side[0]++;
    if (r.key === r.top_key) side[1]++;
  }
  return { shown: rate(t.shown[1], t.shown[0]), hidden: rate(t.hidden[1], t.hidden[0]) };
}

export function labelReport(db: Database.Database): LabelReport {
  const count = <K extends string>(sql: string, keys: readonly K[]): Record<K, number> => {
    const out = Object.fromEntries(keys.map((k) => [k, 0])) as Record<K, number>;
    for (const r of db.prepare(sql).all() as { k: K; n: number }[]) out[r.k] = r.n;
    return out;
  };
  const records = count('SELECT status AS k, count(*) AS n FROM label_records GROUP BY status', ['single', 'pending_second', 'agreed', 'disputed', 'adjudicated'] as const);
  const sets = db.prepare('SELECT id, job_id, round, policy, created_at, counts FROM label_training_sets ORDER BY id DESC LIMIT 5').all() as {
    id: number; job_id: string | null; round: number | null; policy: string; created_at: string; counts: string;
  }[];
  return {
    entries: count('SELECT kind AS k, count(*) AS n FROM label_entries GROUP BY kind', ['annotation', 'adjudication', 'assistant'] as const),
    records,
    adjudicationQueue: records.disputed,
    agreement: agreement(db),
    suggestions: suggestionBias(db),
    trainingSets: sets.reverse().map((s) => ({ id: s.id, jobId: s.job_id, round: s.round, policy: s.policy, createdAt: s.created_at, counts: JSON.parse(s.counts) as TrainingSetCounts })),
  };
}

const f3 = (x: number | null): string => (x === null ? 'n/a' : x.toFixed(3));
const pct = (r: AgreementRate): string => (r.rate === null ? 'no reads' : `${r.agreed}/${r.n} = ${r.rate.toFixed(2)} (95% CI ${r.ci[0].toFixed(2)}–${r.ci[1].toFixed(2)})`);
const kappaLine = (name: string, k: Kappa): string => `  ${name.padEnd(28)} n ${String(k.n).padStart(4)}  observed ${f3(k.n ? k.observed : null)}  chance ${f3(k.n ? k.expected : null)}  kappa ${f3(k.kappa)}`;

export function formatLabelReport(r: LabelReport): string {
  const sum = (m: Record<string, number>) => Object.values(m).reduce((a, b) => a + b, 0);
  const lines = [
    `labels: ${sum(r.entries)} (doctors' reads ${r.entries.annotation}, adjudications ${r.entries.adjudication}, assistant confirmations ${r.entries.assistant})`,
    `labelled records: ${sum(r.records)} (one doctor ${r.records.single}, waiting for a second doctor ${r.records.pending_second}, two agreeing ${r.records.agreed}, in dispute ${r.records.disputed}, adjudicated ${r.records.adjudicated})`,
    `adjudication queue: ${r.adjudicationQueue}`,
    "agreement between doctors (Cohen's kappa, records read by two doctors):",
    ...(r.agreement.overall.n === 0 ? ['  (no record read by two doctors yet)'] : [...r.agreement.pairs.map((p) => kappaLine(p.doctors.join(' × '), p)), kappaLine('overall (1st vs 2nd reader)', r.agreement.overall)]),
    `model's top suggestion chosen: shown ${pct(r.suggestions.shown)}; hidden ${pct(r.suggestions.hidden)}`,
  ];
  for (const s of r.trainingSets) {
    const parts = Object.entries(s.counts.splits).map(([split, m]) => `${split} ${sum(m)} (${Object.entries(m).map(([k, n]) => `${k} ${n}`).join(', ')})`);
    const ex = Object.entries(s.counts.excluded).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`).join(', ');
    lines.push(`training set #${s.id}${s.jobId ? ` ${s.jobId} round ${s.round}` : ''} (labels: ${s.policy}): ${parts.join('; ')}${ex ? `; left out: ${ex}` : ''}`);
  }
  return lines.join('\n');
}
