// Cohen's kappa: agreement of two raters beyond chance, (p_o - p_e) / (1 - p_e), where p_o is the
// share of items they label alike and p_e the agreement expected from each rater's own label
// frequencies. Undefined (null) when p_e = 1: both raters used one and the same label throughout.

export interface Kappa {
  /** Items both raters labelled. */
  n: number;
  observed: number;
  expected: number;
  kappa: number | null;
}

export function cohenKappa(pairs: readonly (readonly [string, string])[]): Kappa {
  const n = pairs.length;
  if (n === 0) return { n: 0, observed: 0, expected: 0, kappa: null };
  const a = new Map<string, number>();
  const b = new Map<string, number>();
  let same = 0;
  for (const [x, y] of pairs) {
    a.set(x, (a.get(x) ?? 0) + 1);
    b.set(y, (b.get(y) ?? 0) + 1);
    if (x === y) same++;
  }
  const observed = same / n;
  let expected = 0;
  for (const [k, na] of a) expected += (na / n) * ((b.get(k) ?? 0) / n);
  const kappa = expected >= 1 - 1e-12 ? null : (observed - expected) / (1 - expected);
  return { n, observed, expected, kappa };
}
