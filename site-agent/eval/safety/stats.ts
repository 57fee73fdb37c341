// 95% Wilson score interval of a pass rate (closed form; well-behaved at 0 and n, unlike the
// normal approximation, which is why it is used for the per-category rates of ~36 prompts).
export function wilson(passed: number, n: number, z = 1.959964): [number, number] {
  if (n === 0) return [0, 1];
  const p = passed / n;
  const z2 = z * z;
  const denom = 1 + z2 / n;
  const centre = (p + z2 / (2 * n)) / denom;
  const half = (z * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n))) / denom;
  return [Math.max(0, centre - half), Math.min(1, centre + half)];
}
