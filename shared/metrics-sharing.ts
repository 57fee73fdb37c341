// A site's policy share_site_metrics — who may see its per-site metrics on the coordinator's
// API — and its form on the wire (HeartbeatRequest.share_site_metrics, proto/fedlora.proto).
// The site sets it (site-agent/config.ts); the coordinator enforces it
// (coordinator/http/site-visibility.ts).

export const SHARE_POLICIES = ['consortium', 'researchers', 'none'] as const;
export type SharePolicy = (typeof SHARE_POLICIES)[number];
/** Also what an agent that does not send the field gets. */
export const DEFAULT_SHARE_POLICY: SharePolicy = 'consortium';

export type MetricsSharingWire = 'METRICS_SHARING_UNSPECIFIED' | 'METRICS_SHARING_CONSORTIUM' | 'METRICS_SHARING_RESEARCHERS' | 'METRICS_SHARING_NONE';

export const sharePolicyToWire = (p: SharePolicy): MetricsSharingWire => `METRICS_SHARING_${p.toUpperCase()}` as MetricsSharingWire;

/** The policy a heartbeat carries; null when the agent did not say (an older agent). A value
 *  this build does not know (a newer agent's; proto enums are open) reads as the most
 *  restrictive policy, 'none', so a site is never shown more than it asked. */
export function sharePolicyFromWire(v: unknown): SharePolicy | null {
  if (v === undefined || v === null || v === '' || v === 'METRICS_SHARING_UNSPECIFIED' || v === 0) return null;
  const p = typeof v === 'string' ? v.replace(/^METRICS_SHARING_/, '').toLowerCase() : '';
  return (SHARE_POLICIES as readonly string[]).includes(p) ? (p as SharePolicy) : 'none';
}
