// Turns a zod error into one line naming the file and the field path of the first problem:
//   "coordinator.yaml: http.port: expected number, received string"
import type { ZodError } from 'zod';

export function describeZodError(source: string, err: ZodError, lineOf?: (path: PropertyKey[]) => number | undefined): string {
  const line = lineOf?.(err.issues[0]?.path ?? []);
  if (line !== undefined) source = `${source}:${line}`;
  const parts = err.issues.slice(0, 3).map((i) => {
    const path = i.path.length ? i.path.map((p) => (typeof p === 'number' ? `[${p}]` : String(p))).join('.').replace(/\.\[/g, '[') : '(root)';
    return `${path}: ${i.message}`;
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
