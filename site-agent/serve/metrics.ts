// Prometheus figures of the assistant (/metrics): time to first token, decode tokens per second
// per answer, queue length, answers and refusals, since the process started. The histograms are
// kept as bucket counts (fixed memory however many answers).
import { Exposition, HistogramCounts } from '../../shared/prometheus.ts';

export interface ServeMetrics {
  answered(o: { ttftMs: number | null; decodeTokens: number; decodeS: number; finish: string }): void;
  refused(code: string): void;
  render(state: { queueLength: number; active: number; servingVersion: string }): string;
}

const TTFT_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30];
const TPS_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000];

export function createServeMetrics(): ServeMetrics {
  const ttft = new HistogramCounts(TTFT_BUCKETS);
  const tps = new HistogramCounts(TPS_BUCKETS);
  const finishes = new Map<string, number>();
  const refusals = new Map<string, number>();
  return {
    answered(o) {
      if (o.ttftMs !== null) ttft.observe(o.ttftMs / 1000);
      if (o.decodeTokens > 0 && o.decodeS > 0) tps.observe(o.decodeTokens / o.decodeS);
      finishes.set(o.finish, (finishes.get(o.finish) ?? 0) + 1);
    },
    refused(code) {
      refusals.set(code, (refusals.get(code) ?? 0) + 1);
    },
    render(state) {
      const e = new Exposition();
      e.histogramOf('fedlora_serve_time_to_first_token_seconds', 'Seconds from the start of generation to the first token of an answer', ttft);
      e.histogramOf('fedlora_serve_decode_tokens_per_second', 'Decode speed of each answer after its first token (tokens per second)', tps);
      e.gauge('fedlora_serve_queue_length', 'Requests waiting for a generation slot', state.queueLength);
      e.gauge('fedlora_serve_active_requests', 'Requests generating now', state.active);
      e.declare('fedlora_serve_answers_total', 'Answers given, by finish reason (stop, length, cancelled)', 'counter');
      for (const [finish, n] of finishes) e.counter('fedlora_serve_answers_total', 'Answers given, by finish reason (stop, length, cancelled)', n, { finish });
      e.declare('fedlora_serve_refused_total', 'Requests refused, by error code (queue full, prompt too long, ...)', 'counter');
      for (const [code, n] of refusals) e.counter('fedlora_serve_refused_total', 'Requests refused, by error code (queue full, prompt too long, ...)', n, { code });
      e.gauge('fedlora_serve_version_info', 'The adapter version being served (label version)', 1, { version: state.servingVersion });
      return e.render();
    },
  };
}
