// The doctors' review aggregates a site sends the coordinator with a job's evaluation reports:
// per reviewed version of the job, the figures of reviewMetrics (counts, proportions, mean score,
// kappa; withheld below evaluation.min_items), sent again only when they changed (review_reports
// keeps what was sent last). Never a case, a prompt, an answer or a rating.
import type Database from 'better-sqlite3-multiple-ciphers';
import { sha256Hex } from '../../../shared/hash.ts';
import type { SiteReportMetric } from '../../agent/metrics-report.ts';
import { reviewOf, reviewMetrics } from './aggregates.ts';

export interface PendingReview {
  jobId: string;
  version: number;
  signature: string;
  metrics: SiteReportMetric[];
}

export interface ReviewEgress {
  /** The job's versions whose review figures changed since they were last sent. */
  pending(jobId: string): PendingReview[];
  markSent(p: PendingReview): void;
}

export function reviewEgress(db: Database.Database, minItems: number): ReviewEgress {
  return {
    pending(jobId) {
      const labels = db.prepare('SELECT adapter_label FROM review_cases WHERE job_id = ? AND version IS NOT NULL GROUP BY adapter_label ORDER BY min(id)').pluck().all(jobId) as string[];
      const out: PendingReview[] = [];
      for (const label of labels) {
        const r = reviewOf(db, label);
        const metrics = reviewMetrics(r, minItems);
        if (!metrics.length) continue;
        const signature = sha256Hex(JSON.stringify(metrics.map((m) => [m.name, m.value, m.count])));
        const last = db.prepare('SELECT signature FROM review_reports WHERE job_id = ? AND version = ?').pluck().get(jobId, r.version) as string | undefined;
        if (last !== signature) out.push({ jobId, version: r.version!, signature, metrics });
      }
      return out;
    },
    markSent(p) {
      db.prepare(`INSERT INTO review_reports (job_id, version, signature) VALUES (?,?,?)
        ON CONFLICT (job_id, version) DO UPDATE SET signature = excluded.signature, sent_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')`).run(p.jobId, p.version, p.signature);
    },
  };
}
