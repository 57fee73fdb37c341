// The zod schemas of the HTTP API: fastify validates requests and serialises answers with
// them (fastify-type-provider-zod), and @fastify/swagger turns them into the OpenAPI document
// served at /api/openapi.json, so the document cannot drift from the routes.
import { z } from 'zod';

const nullableString = z.string().nullable();
const iso = z.string().describe('ISO 8601 time');

const ErrorBody = z.object({
  error: z.object({
    code: z.string().describe('FEDLORA_ERR_* from the error catalogue (shared/errors.ts)'),
    message: z.string().describe('what is wrong and where'),
  }),
});
z.globalRegistry.add(ErrorBody, { id: 'Error' });

/** `{401: Error, 404: Error, ...}` for a route's response map. */
export function errors<const C extends number>(...codes: C[]): Record<C, typeof ErrorBody> {
  return Object.fromEntries(codes.map((c) => [c, ErrorBody])) as Record<C, typeof ErrorBody>;
}

export const JobParams = z.object({ id: z.string().min(1).max(200).describe('job id') });
export const SiteParams = z.object({ id: z.string().min(1).max(200).describe('site id') });

const ADAPTER_FILES = ['adapter_model.safetensors', 'adapter_config.json', 'manifest.json', 'manifest.sig'] as const;
export const AdapterFileParams = JobParams.extend({
  version: z.coerce.number().int().min(0).describe('adapter version (0 = the initial adapter)'),
  file: z.enum(ADAPTER_FILES),
});

export const Format = z.enum(['json', 'csv']).optional().describe('json (default) or csv');
const MetricKind = z.enum(['global', 'local', 'base', 'cross', 'personal']);
export const MetricsQuery = z.object({
  site: z.string().max(200).optional().describe('only this site'),
  metric: z.string().max(200).optional().describe('only this metric (loss, accuracy, ...)'),
  kind: MetricKind.optional().describe('global: the round\'s global adapter; local: the site\'s local-only adapter; base: the base model; cross: another site\'s local-only adapter'),
  subset: z.string().max(512).optional().describe("only figures of this subset: '' (given as subset=) the whole set, 'diagnosis=X', 'sex=F', 'age_band=40-59', 'diagnosis=X;predicted=Y' (confusion cells); absent: all"),
  eval_set: z.string().max(80).optional().describe("only this evaluation set: '' (eval_set=) the sites' held-out sets, 'exam:<name>' an exam, 'review' the doctors' review; absent: all"),
  format: Format,
});
export const CrossEvalQuery = z.object({ metric: z.string().max(200).optional(), format: Format });

export const Health = z.object({ status: z.literal('ok'), time: iso, jobs_running: z.number().int(), sites_online: z.number().int(), sites_total: z.number().int() });

export const Site = z.object({
  id: z.string(), status: z.string(), online: z.boolean(), last_seen: iso.nullable(), agent_version: nullableString, state: nullableString,
  cert_serial: nullableString, cert_not_after: iso.nullable(),
  share_site_metrics: z.enum(['consortium', 'researchers', 'none']).describe('who may see this site\'s per-site metrics (the site\'s own policy)'),
});

export const Job = z.object({
  id: z.string(), name: z.string(), status: z.enum(['running', 'completed', 'failed', 'cancelled']), error: nullableString,
  current_version: z.number().int(), rounds_total: z.number().int().describe('rounds of all its data periods'),
  periods: z.array(z.object({
    period: z.number().int(), first_round: z.number().int(), rounds: z.number().int(), reason: z.enum(['submitted', 'continued', 'scheduled']), started: iso,
  })).describe('data periods: the first rounds, then each continuation (fedlora job continue, or the schedule)'),
  schedule: z.object({ every: z.string(), next_due: iso.nullable().describe('when a new period may start (it waits for new records at a site)') }).nullable(),
  current_round: z.object({ round: z.number().int(), attempt: z.number().int(), state: z.string(), deadline: iso.nullable() }).nullable(),
  dp_sampling: z.object({
    sample_rate: z.number(), eligible_sites: z.number().int().describe('N: the enrolled eligible sites, fixed for the job'),
    expected_sites: z.number().describe('q x N: the fixed denominator of the noised mean'), sites: z.array(z.string()),
  }).nullable().describe('DP Poisson sampling (privacy.dp.sample_rate < 1): each round samples each of the N sites with probability q'),
  created: iso, updated: iso,
  spec: z.record(z.string(), z.unknown()).describe('the job specification as stored (defaults filled in)'),
});

const Withheld = z.literal(true).optional().describe('the site\'s share_site_metrics policy keeps its details from this caller');

export const Round = z.object({
  round: z.number().int(), attempt: z.number().int(), state: z.string(), base_version: z.number().int(), selected: z.array(z.string()),
  deadline: iso.nullable(), started: iso.nullable(), aggregating: iso.nullable(), published: iso.nullable(), error: nullableString,
  duration_ms: z.number().nullable(), metrics: z.unknown().nullable().describe('aggregation metrics of the round (strategy-specific)'),
  tasks: z.array(z.object({ site: z.string(), status: z.string(), decline_code: nullableString, decline_reason: nullableString, withheld: Withheld })),
  updates: z.array(z.object({
    update_id: z.string(), site: z.string(), status: z.string(), reason: nullableString, size: z.number().int(), sha256: z.string(),
    examples: z.number().int().nullable(), norm: z.number().nullable(), withheld: Withheld,
  })),
});

export const AdapterVersion = z.object({
  version: z.number().int(), round: z.number().int(), sha256: z.string(), size: z.number().int(), manifest_sha256: z.string(), created: iso,
  manifest: z.record(z.string(), z.unknown()).describe('the signed publication manifest'), signature: z.string().describe('base64 signature of the manifest'),
});

const ciBound = (which: string) => z.number().nullable().describe(`${which} of the 95% percentile bootstrap interval; null for counts and rates`);

export const Metric = z.object({
  job_id: z.string(), round: z.number().int(), site_id: z.string(), kind: z.string(), metric: z.string(), value: z.number(), count: z.number().int(),
  model_owner: z.string(), adapter_version: z.number().int().nullable(), phase: nullableString, task_id: nullableString, created_ms: z.number().int(),
  subset: z.string().describe("'' = the whole set; 'diagnosis=X', 'sex=F', 'age_band=40-59', 'subject=S', 'diagnosis=X;predicted=Y'"),
  eval_set: z.string().describe("'' = the site's held-out set; 'exam:<name>' = an exam file; 'review' = the doctors' review of the adapter's answers"),
  ci_low: ciBound('lower end'), ci_high: ciBound('upper end'), ci_resamples: z.number().int().nullable().describe('bootstrap resamples behind the interval'),
});

export const SummaryRow = z.object({
  round: z.number().int(), kind: z.string(), metric: z.string(), model_owner: z.string(), subset: z.string(), eval_set: z.string(), sites: z.number().int(), count: z.number().int(),
  mean: z.number(), weighted_mean: z.number().nullable().describe('the consortium figure: the sites\' figures weighted by count'),
  ci_low: z.number().nullable().describe('consortium 95% interval of weighted_mean (stratified bootstrap over the sites\' replicates); null when a site sent none'),
  ci_high: z.number().nullable(), min: z.number().nullable(), max: z.number().nullable(),
});

export const WithheldSites = z.array(z.string()).describe('sites whose rows are left out: their share_site_metrics policy keeps them from this caller');

export const CrossEvalRequest = z.object({
  id: z.number().int(), job_id: z.string(), requested_by: z.string(), sites: z.array(z.string()).nullable(), status: z.string(), note: nullableString,
  created: iso, updated: iso,
});

export const CrossEval = z.object({
  job_id: z.string(), available: z.boolean(), metric: nullableString, metrics: z.array(z.string()), data_sites: z.array(z.string()), model_owners: z.array(z.string()),
  values: z.array(z.array(z.number().nullable())).describe('values[i][j]: data_sites[i] evaluating model_owners[j]\'s local-only adapter; null = not evaluated'),
  cells: z.array(z.object({ data_site: z.string(), model_owner: z.string(), value: z.number(), count: z.number().int(), ci_low: z.number().nullable(), ci_high: z.number().nullable(), round: z.number().int(), adapter_version: z.number().int().nullable() })),
  global: z.object({
    version: z.number().int().nullable(),
    values: z.array(z.number().nullable()).describe('values[i]: data_sites[i] evaluating the job\'s global adapter of this version (the same held-out set); null = not reported'),
    cells: z.array(z.object({ data_site: z.string(), value: z.number(), count: z.number().int(), ci_low: z.number().nullable(), ci_high: z.number().nullable(), round: z.number().int() })),
  }).describe('the global adapter beside the local-only ones'),
  message: z.string().optional(),
  withheld_sites: WithheldSites,
  requests: z.array(CrossEvalRequest),
});

export const Privacy = z.object({
  dp_enabled: z.boolean(), budget_epsilon: z.number().nullable(), delta: z.number().nullable(), epsilon_spent: z.number(),
  ledger: z.array(z.object({ round: z.number().int(), epsilon: z.number(), delta: z.number(), noise_multiplier: z.number(), sample_rate: z.number(), at: iso.nullable() })),
});

/** A text or file answer (PEM, Prometheus, HTML, files), documented by its media type; sent as it
 *  is (fastify serialises objects only). */
export function media(type: string, description: string, format?: 'binary') {
  return { description, content: { [type]: { schema: z.string().meta(format ? { format, description } : { description }) } } };
}

/** JSON, or CSV with ?format=csv. */
export function jsonOrCsv<T extends z.ZodType>(schema: T, description: string) {
  return { description, content: { 'application/json': { schema }, 'text/csv': { schema: z.string().describe('CSV: a header row, then one row per item') } } };
}
