// Turns a zod error into one line naming the file (and line, when known) and the field paths of
// the first problems — the one formatter of every config, spec and option check:
//   "coordinator.yaml:12: http.port: expected number, received string"
// `under` is where the validated object sits in the file (e.g. ['data'] for a site's data section).
import type { ZodError } from 'zod';

export function describeZodError(source: string, err: ZodError, lineOf?: (path: PropertyKey[]) => number | undefined, under: PropertyKey[] = []): string {
  const line = lineOf?.([...under, ...(err.issues[0]?.path ?? [])]);
  if (line !== undefined) source = `${source}:${line}`;
  const parts = err.issues.slice(0, 3).map((issue) => {
    const at = [...under, ...issue.path];
    const path = at.length ? at.map((p) => (typeof p === 'number' ? `[${p}]` : String(p))).join('.').replace(/\.\[/g, '[') : '(root)';
    return `${path}: ${issue.message}`;
  });
  return `${source}: ${parts.join('; ')}`;
}

/** Line (1-based) of the YAML node at `path`, or of its nearest existing parent. */
export function yamlLineLocator(doc: { getIn(path: Iterable<unknown>, keepScalar?: boolean): unknown }, text: string): (path: PropertyKey[]) => number | undefined {
  return (path) => {
    for (let n = path.length; n > 0; n--) {
      const node = doc.getIn(path.slice(0, n), true) as { range?: [number, number, number] } | undefined;
      if (node && typeof node === 'object' && node.range) return text.slice(0, node.range[0]).split('\n').length;
    }
    return undefined;
  };
}
