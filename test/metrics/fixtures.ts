// Fixtures for the researchers' view tests: run a small job through the real round engine
// (fake updates via submitUpdateBytes, as test/coordinator does), report evaluation metrics
// through the engine's ReportMetrics path, and a tiny Prometheus text-format parser.
import { submitUpdateBytes } from '../../coordinator/rounds/intake.ts';
import type { RoundEngine } from '../../coordinator/rounds/index.ts';
import { encodeDelta, fakeDelta } from '../coordinator/helpers.ts';

/** Submit one fake update per site for every round of `jobId` (sites must be online). */
export async function runRounds(engine: RoundEngine, jobId: string, sites: string[], rounds: number, examples: (site: string) => number = () => 4): Promise<void> {
  for (let round = 1; round <= rounds; round++) {
    await engine.tick();
    const { layout } = engine.jobInfo(jobId);
    for (const s of sites) {
      const t = engine.store.openTasksFor(s).find((x) => x.job_id === jobId && x.round === round);
      if (!t) throw new Error(`site ${s} has no open task in round ${round} of ${jobId}`);
      await submitUpdateBytes(engine, s, { updateId: `${jobId}-${s}-r${round}`, taskId: t.task_id, jobId, round, baseVersion: round - 1, numExamples: examples(s) },
        encodeDelta(layout.update, fakeDelta(layout.update, s, round)));
    }
    await engine.tick();
  }
}

/** Deterministic evaluation numbers: the global model improves faster than local-only ones. */
export function evalValue(site: string, kind: 'global' | 'local', metric: 'loss' | 'accuracy', round: number): number {
  const s = site.charCodeAt(site.length - 1) % 7;
  if (metric === 'loss') return kind === 'global' ? 3 - 0.5 * round + 0.05 * s : 3 - 0.25 * round + 0.1 * s;
  return kind === 'global' ? 0.3 + 0.15 * round - 0.01 * s : 0.3 + 0.07 * round - 0.02 * s;
}
export const evalCount = (site: string) => 10 * (1 + (site.charCodeAt(site.length - 1) % 5));

/** Deterministic bootstrap replicates around a figure (B = 40), and their 2.5/97.5% ends as its interval. */
export function replicatesAround(value: number, spread: number, seed: number): { bootstrap: number[]; ci: { low: number; high: number; resamples: number } } {
  const bootstrap = Array.from({ length: 40 }, (_, b) => Math.fround(value + spread * Math.sin(seed * 7.1 + b * 2.3)));
  const sorted = [...bootstrap].sort((a, b) => a - b);
  return { bootstrap, ci: { low: sorted[0], high: sorted[39], resamples: 40 } };
}
export const DIAGNOSES = ['Asthma', 'Pneumonia'];
/** Site s's recall of diagnosis d in a round (global adapter). */
export const recallValue = (site: string, d: number, round: number) => 0.4 + 0.1 * round + 0.05 * d - 0.01 * (site.charCodeAt(site.length - 1) % 7);

/** What a site agent reports: global (round = version evaluated) and local-only metrics; with
 *  `intervals`, each with its 95% interval and replicates, and per-diagnosis recall and support. */
export function reportEval(engine: RoundEngine, jobId: string, sites: string[], rounds: number, o: { intervals?: boolean } = {}): void {
  for (let round = 1; round <= rounds; round++) {
    for (const site of sites) {
      const spread = 0.02 * (1 + (site.charCodeAt(site.length - 1) % 3));
      for (const kind of ['global', 'local'] as const) {
        const seed = round * 13 + site.charCodeAt(site.length - 1) + (kind === 'global' ? 0 : 5);
        engine.reportMetrics(site, {
          taskId: `${jobId}.r${round}.a1.${site}`, jobId, round, phase: 'eval',
          metrics: [
            ...(['loss', 'accuracy'] as const).map((metric) => {
              const value = evalValue(site, kind, metric, round);
              return { kind, name: metric, value, count: evalCount(site), modelOwner: '', adapterVersion: round, ...(o.intervals ? replicatesAround(value, spread, seed) : {}) };
            }),
            ...(o.intervals && kind === 'global'
              ? DIAGNOSES.flatMap((d, i) => [
                { kind, name: 'recall', subset: `diagnosis=${d}`, value: recallValue(site, i, round), count: evalCount(site) / 2, modelOwner: '', adapterVersion: round, ...replicatesAround(recallValue(site, i, round), 2 * spread, seed + i) },
                { kind, name: 'support', subset: `diagnosis=${d}`, value: evalCount(site) / 2, count: evalCount(site) / 2, modelOwner: '', adapterVersion: round },
              ])
              : []),
          ],
        });
      }
    }
  }
}

/** What sites report for an exam they scored (eval_set exam:<name>): accuracy with interval and replicates, per subject. */
export const examAccuracy = (site: string, subject: string) => 0.5 + 0.01 * (site.charCodeAt(site.length - 1) % 7) + (subject === 'cardiology' ? 0.1 : 0);
export function reportExam(engine: RoundEngine, jobId: string, sites: string[], version: number, exam: string): void {
  for (const site of sites) {
    const seed = site.charCodeAt(site.length - 1);
    engine.reportMetrics(site, {
      taskId: `exam-${jobId}-${site}`, jobId, round: version, phase: 'eval',
      metrics: [['', 'all'], ['subject=cardiology', 'cardiology']].map(([subset, subject], i) => {
        const value = examAccuracy(site, subset ? subject : '');
        return { kind: 'global', name: 'accuracy', subset, evalSet: `exam:${exam}`, value, count: subset ? 4 : 12, modelOwner: '', adapterVersion: version, ...replicatesAround(value, 0.05, seed + i) };
      }),
    });
  }
}

export function crossValue(dataSite: string, owner: string): number {
  return dataSite === owner ? 0.8 : 0.4 + 0.01 * (dataSite.charCodeAt(dataSite.length - 1) % 10) + 0.02 * (owner.charCodeAt(owner.length - 1) % 10);
}
export function reportCross(engine: RoundEngine, jobId: string, sites: string[], round: number): void {
  for (const site of sites) {
    engine.reportMetrics(site, {
      taskId: `${jobId}.cross.${site}`, jobId, round, phase: 'cross_eval',
      metrics: sites.map((owner) => ({ kind: 'cross', name: 'accuracy', value: crossValue(site, owner), count: evalCount(site), modelOwner: owner, adapterVersion: round })),
    });
  }
}

// ---- a tiny Prometheus text format (0.0.4) parser ------------------------------------------
export interface PromSample { name: string; labels: Record<string, string>; value: number }
export interface PromFamily { name: string; help?: string; type?: string; samples: PromSample[] }

const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
const LABEL = `[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\\\\n]|\\\\[\\\\"n])*"`;
const VALUE = '(?:[+-]?(?:\\d+\\.?\\d*(?:[eE][+-]?\\d+)?|\\.\\d+(?:[eE][+-]?\\d+)?)|NaN|[+-]Inf)';
export const SAMPLE_RE = new RegExp(`^(${NAME})(?:\\{((?:${LABEL})(?:,${LABEL})*,?)?\\})? (${VALUE})(?: -?\\d+)?$`);
const HELP_RE = new RegExp(`^# HELP (${NAME}) ((?:[^\\\\\\n]|\\\\[\\\\n])*)$`);
const TYPE_RE = new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram|summary|untyped)$`);

function unescape(v: string): string {
  return v.replace(/\\(["\\n])/g, (_m, c: string) => (c === 'n' ? '\n' : c));
}

/** Parse; throws on any line that does not match the grammar, a sample before its TYPE, or a family without HELP/TYPE. */
export function parsePrometheus(text: string): Map<string, PromFamily> {
  if (!text.endsWith('\n')) throw new Error('exposition must end with a newline');
  const fams = new Map<string, PromFamily>();
  const familyOf = (sample: string) => {
    for (const suf of ['_bucket', '_sum', '_count']) {
      const base = sample.endsWith(suf) ? sample.slice(0, -suf.length) : null;
      if (base && fams.get(base)?.type === 'histogram') return base;
    }
    return sample;
  };
  text.slice(0, -1).split('\n').forEach((line, i) => {
    let m: RegExpExecArray | null;
    if ((m = HELP_RE.exec(line))) {
      const f = fams.get(m[1]) ?? { name: m[1], samples: [] };
      if (f.help !== undefined) throw new Error(`line ${i + 1}: second HELP for ${m[1]}`);
      f.help = m[2];
      fams.set(m[1], f);
    } else if ((m = TYPE_RE.exec(line))) {
      const f = fams.get(m[1]) ?? { name: m[1], samples: [] };
      if (f.type !== undefined || f.samples.length) throw new Error(`line ${i + 1}: TYPE for ${m[1]} repeated or after its samples`);
      f.type = m[2];
      fams.set(m[1], f);
    } else if ((m = SAMPLE_RE.exec(line))) {
      const fam = fams.get(familyOf(m[1]));
      if (!fam?.type) throw new Error(`line ${i + 1}: sample ${m[1]} has no TYPE before it`);
      const labels: Record<string, string> = {};
      for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"/g)) labels[l[1]] = unescape(l[2]);
      const v = m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : Number(m[3]);
      fam.samples.push({ name: m[1], labels, value: v });
    } else if (line.startsWith('#')) {
      // other comments are allowed by the format
    } else throw new Error(`line ${i + 1} does not match the exposition grammar: ${JSON.stringify(line)}`);
  });
  for (const f of fams.values()) {
    if (f.help === undefined || f.type === undefined) throw new Error(`metric ${f.name} lacks ${f.help === undefined ? 'HELP' : 'TYPE'}`);
    if (f.type === 'counter' && !f.name.endsWith('_total')) throw new Error(`counter ${f.name} should end in _total`);
  }
  return fams;
}

/** The value of one sample (by family, sample name and label subset), or undefined. */
export function sampleValue(fams: Map<string, PromFamily>, name: string, labels: Record<string, string> = {}, family = name): number | undefined {
  return fams.get(family)?.samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
}
