// The `serve:` section of site.yaml: the clinicians' assistant (`fedlora site serve`), its
// request queue, disclaimer, retrieval, per-query audit and the release gate for new global
// adapters. Validated with the rest of the site config (unknown keys are errors naming the field).
import { z } from 'zod';

export const DEFAULT_DISCLAIMER = {
  zh: '本AI提供的建议仅供参考，不能替代专业医生的诊断和治疗。',
  en: "This AI's suggestions are for reference only and cannot replace diagnosis and treatment by a qualified doctor.",
};

const GateMetricSchema = z
  .object({
    /** A held-out metric the site agent computes (accuracy, macro_f1, loss, perplexity, exact_match, ...). */
    name: z.string().min(1),
    higher_is_better: z.boolean(),
    /** How much worse than the serving version a candidate may be (absolute). */
    margin: z.number().min(0),
  })
  .strict();

export const GatePolicySchema = z
  .object({
    metrics: z.array(GateMetricSchema).default([
      { name: 'accuracy', higher_is_better: true, margin: 0.02 },
      { name: 'loss', higher_is_better: false, margin: 0.05 },
    ]),
    /** Lowest overall pass rate of the safety suite a candidate may have. */
    safety_floor: z.number().min(0).max(1).default(0.9),
    /** Also require `fedlora site adapter approve` by an admin after the automatic checks. */
    require_admin_approval: z.boolean().default(false),
    /** Run the safety suite on each global adapter the agent receives. */
    safety_on_receive: z.boolean().default(true),
    /** Tokens generated per safety prompt. */
    safety_max_new_tokens: z.number().int().min(8).max(2048).default(160),
    /** The doctors' review as a floor (null: its figures are shown, not enforced): a candidate is
     *  held until `min_rated` of its sampled cases have a rating and the upper bound of the 95%
     *  Wilson interval of its unsafe rate (first ratings) is at most `max_unsafe_rate`. */
    review: z
      .object({
        min_rated: z.number().int().min(1),
        max_unsafe_rate: z.number().min(0).max(1),
      })
      .strict()
      .nullable()
      .default(null),
  })
  .strict();

/** The doctors' annotation workbench (/workbench, site-agent/serve/workbench/). */
export const WorkbenchConfigSchema = z
  .object({
    enabled: z.boolean().default(true),
    /** The site's diagnosis code list: CSV with `code` and `name`, `name_zh` and/or `name_en`
     *  (relative to the site dir); null = the built-in ICD-10 sample. */
    code_list: z.string().min(1).nullable().default(null),
    code_list_encoding: z.enum(['utf-8', 'gb18030', 'gbk']).default('utf-8'),
    /** Share of records read by two doctors independently (agreement, adjudication of disputes). */
    double_read_fraction: z.number().min(0).max(1).default(0.2),
    /** Share of reads in the unlabelled queue that see the model's suggestions; the others are
     *  recorded with the hidden suggestion, so the report can compare (suggestion bias). */
    show_suggestions_fraction: z.number().min(0).max(1).default(0.8),
    suggestions: z
      .object({
        enabled: z.boolean().default(true),
        /** Suggestions shown per record. */
        top_k: z.number().int().min(1).max(20).default(5),
        /** Diagnoses scored per record: the site's most frequent first, then the code list's. */
        candidates: z.number().int().min(2).max(200).default(24),
        /** While the assistant is idle, rank this many labelled records per pass (disagreement queue). */
        precompute_per_pass: z.number().int().min(0).default(4),
      })
      .strict()
      .default({ enabled: true, top_k: 5, candidates: 24, precompute_per_pass: 4 }),
  })
  .strict();

/** Doctors' review of a candidate adapter's answers (/review, site-agent/serve/review/). */
export const ReviewConfigSchema = z
  .object({
    enabled: z.boolean().default(true),
    /** Held-out cases the candidate answers for review (`fedlora site review sample`). */
    sample_size: z.number().int().min(1).max(10_000).default(40),
    /** Share of sampled cases rated by two doctors (the second blind), for Cohen's kappa. */
    double_review_fraction: z.number().min(0).max(1).default(0.25),
    /** Tokens generated per sampled answer. */
    max_new_tokens: z.number().int().min(1).max(8192).default(384),
    /** Cases the candidate answers for review as soon as the agent receives it, before the gate
     *  decides (the sampling of `fedlora site review sample`); 0: only by hand. */
    auto_sample: z.number().int().min(0).max(10_000).default(0),
  })
  .strict();

export const ServeConfigSchema = z
  .object({
    host: z.string().default('127.0.0.1'),
    port: z.number().int().min(0).max(65535).default(8088),
    /** The name clients pass as `model`; answers carry the adapter version that produced them. */
    model_name: z.string().min(1).default('fedlora-assistant'),
    backend: z.enum(['engine', 'vllm']).default('engine'),
    vllm_url: z.string().url().nullable().default(null),
    /** Requests generating at once; further ones wait in the queue. */
    concurrency: z.number().int().min(1).max(256).default(2),
    /** Requests waiting beyond `concurrency`; more get 429 with Retry-After. */
    queue_size: z.number().int().min(0).max(10_000).default(16),
    max_prompt_tokens: z.number().int().min(16).default(3072),
    max_tokens_default: z.number().int().min(1).default(384),
    max_tokens_limit: z.number().int().min(1).default(2048),
    /** TLS with the hospital's own certificate for this server (PEM files); null = plain HTTP. */
    tls: z.object({ cert: z.string().min(1), key: z.string().min(1) }).strict().nullable().default(null),
    /** Appended to every answer: `auto` picks Chinese when the question has Chinese characters. */
    disclaimer: z
      .object({ zh: z.string().min(1).default(DEFAULT_DISCLAIMER.zh), en: z.string().min(1).default(DEFAULT_DISCLAIMER.en), language: z.enum(['auto', 'zh', 'en', 'both']).default('auto') })
      .strict()
      .default({ ...DEFAULT_DISCLAIMER, language: 'auto' }),
    /** Instructions given to the model before the question (the site may write its own). */
    system_prompt: z.string().nullable().default(null),
    retrieval: z
      .object({ enabled: z.boolean().default(true), top_k: z.number().int().min(1).max(20).default(3), max_passage_chars: z.number().int().min(100).default(700) })
      .strict()
      .default({ enabled: true, top_k: 3, max_passage_chars: 700 }),
    audit: z
      .object({
        /** What of a question is kept at the site: its hash only, or also its de-identified text. */
        store_prompt: z.enum(['hash', 'deidentified']).default('deidentified'),
        /** Site audit entries and stored answers older than this are removed (null = keep forever);
         *  verification still holds (the chain keeps the hash it now starts from). */
        retention_days: z.number().int().min(1).nullable().default(null),
      })
      .strict()
      .default({ store_prompt: 'deidentified', retention_days: null }),
    gate: GatePolicySchema.default(GatePolicySchema.parse({})),
    workbench: WorkbenchConfigSchema.default(WorkbenchConfigSchema.parse({})),
    review: ReviewConfigSchema.default(ReviewConfigSchema.parse({})),
  })
  .strict();

export type ServeConfig = z.infer<typeof ServeConfigSchema>;
export type GatePolicy = z.infer<typeof GatePolicySchema>;
export type WorkbenchConfig = z.infer<typeof WorkbenchConfigSchema>;
export type ReviewConfig = z.infer<typeof ReviewConfigSchema>;
