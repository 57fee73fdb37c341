// Which items a reported figure is about: Metric.subset on the wire, `subset` in the coordinator's
// metrics table and API. '' is the whole evaluation set; otherwise `key=value` pairs joined by ';':
//   diagnosis=<label>                      per-diagnosis figures (precision, recall, ...)
//   diagnosis=<gold>;predicted=<label>     a confusion-matrix cell (metric `confusion`)
//   sex=<F|M>, age_band=<band>             subgroup figures
//   subject=<name>                         exam questions of one subject
// '%', '=' and ';' inside a key or value are percent-encoded (decodeURIComponent reads them back).

const esc = (s: string): string => s.replace(/[%=;]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`);

export function encodeSubset(pairs: [string, string][]): string {
  return pairs.map(([k, v]) => `${esc(k)}=${esc(v)}`).join(';');
}

export function parseSubset(subset: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (!subset) return out;
  for (const part of subset.split(';')) {
    const i = part.indexOf('=');
    if (i > 0) out[decodeURIComponent(part.slice(0, i))] = decodeURIComponent(part.slice(i + 1));
  }
  return out;
}
