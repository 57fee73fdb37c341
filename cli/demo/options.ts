// The demo's options (runDemo in ./run-demo.ts) and their defaults: runDemo's callers spread
// DEMO_DEFAULTS, and `fedlora demo` shows them as its option defaults. A module of its own so that
// registering the CLI's commands does not load the engine.
import type { CanaryPlan } from '../../site-agent/data/synth/canaries.ts';

export interface DemoOptions {
  sites: number;
  rounds: number;
  out: string;
  records: number;
  localSteps: number;
  arch: 'llama' | 'qwen2';
  lang: 'en' | 'zh' | 'mixed';
  skew: number;
  seed: number;
  aggregation: string;
  freezeA: boolean;
  /** DP-FedAvg; sampleRate q < 1 (default 1) Poisson-samples the hospitals every round. */
  dp: { clipNorm: number; noiseMultiplier: number; budget: number; sampleRate?: number } | null;
  secureAggregation: boolean;
  keepRunning: boolean;
  /** After the job, ask for cross-site evaluation (the demo hospitals consent in their policy). */
  crossEval: boolean;
  /** End with hospital-1's assistant (step 7). */
  assistant: boolean;
  /** Each hospital also trains its local-only adapter every round (the report's "local" column). */
  localBaseline: boolean;
  /** The local optimizer's learning rate. */
  learningRate: number;
  /** Std of the tiny model's lm_head (see TinyModelOptions.lmHeadStd; default: the task's model). */
  lmHeadStd?: number;
  /** Canaries planted in one hospital's synthetic records (the privacy audit). */
  canaries?: CanaryPlan;
  /** What the hospitals learn: 'diagnosis' (default) the diagnosis from the note's findings, on
   *  unequal hospitals with a consortium-wide balanced test set; 'case-note' the whole answer
   *  (diagnosis, reasoning, treatment) from the full note, hospitals of `records` each: the default
   *  with canaries, which are planted in the treatment. */
  task?: 'diagnosis' | 'case-note';
  /** Records of the last hospital, a small one (null: every hospital has `records`; diagnosis task). */
  smallSite?: number | null;
  /** Cases per diagnosis in the consortium-wide balanced test set every hospital also scores (0: none; diagnosis task). */
  sharedPerDiagnosis?: number;
  /** After the job: each hospital ingests `records` new records (another department mix) and
   *  `fedlora job continue --rounds` runs a new data period with train.replay_fraction. */
  continuation: { rounds: number; records: number; replayFraction: number } | null;
  /** training.personal_steps at every hospital: its personalised adapter of each global version (0: none). */
  personalSteps: number;
  /** Hospitals of smaller hardware: policy.max_lora_rank by hospital name, and the job's
   *  lora.min_site_r. A hospital whose maximum is below it declines the rounds: min_sites counts
   *  the others. Needs an aggregation that combines ranks (svd, or ffa with freezeA). */
  siteRanks?: { minSiteR: number; maxLoraRank: Record<string, number> } | null;
  /** A distillation job (train.distill): a larger tiny teacher (one more layer, other weights, the
   *  same byte tokenizer) in the hospitals' teachers folder, except at the hospitals in `missingAt`,
   *  which decline the rounds for want of it (min_sites counts the others). */
  distill?: { topK: number; temperature: number; alpha: number; missingAt: string[] } | null;
  log: (line: string) => void;
}

export const DEMO_DEFAULTS: Omit<DemoOptions, 'out' | 'log'> = {
  sites: 3,
  rounds: 4,
  records: 160,
  localSteps: 20,
  arch: 'llama',
  lang: 'en',
  skew: 0.5,
  seed: 7,
  aggregation: 'fedavg',
  freezeA: false,
  dp: null,
  secureAggregation: false,
  keepRunning: false,
  crossEval: true,
  assistant: true,
  localBaseline: true,
  learningRate: 2e-2,
  smallSite: 60,
  sharedPerDiagnosis: 8,
  continuation: null,
  // `fedlora demo` shows each hospital's personalised adapter; runs that only need the rounds set 0
  personalSteps: 2,
};
