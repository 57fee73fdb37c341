// A renderer for the small Go-template subset deploy/helm/fedlora-coordinator uses, so CI can
// check the chart without a helm binary. Supported (anything else is an error naming the
// template and the action, so the chart cannot drift out of the subset unnoticed):
//   {{ .Values.a.b }}  {{ .Release.Name }}  {{ .Release.Namespace }}  {{ .Chart.Name|Version|AppVersion }}
//   {{- ... -}} whitespace trimming
//   {{- if PATH }} / {{- if not PATH }} ... {{- else }} ... {{- end }}   (Go truthiness: "", 0, false, nil, empty map/list are false)
//   pipelines of: quote, toYaml, nindent N, indent N    e.g. {{ toYaml .Values.x | nindent 4 }}, {{ .Values.x | quote }}
//   {{/* comments */}}
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';

export interface RenderContext {
  Values: Record<string, unknown>;
  Release: { Name: string; Namespace: string };
  Chart: { Name: string; Version: string; AppVersion: string };
}

type Node = { kind: 'text'; text: string } | { kind: 'expr'; expr: string } | { kind: 'if'; cond: string; then: Node[]; else: Node[] };

/** Split into text and actions, applying {{- / -}} trimming. */
function lex(src: string, file: string): ({ kind: 'text'; text: string } | { kind: 'action'; body: string })[] {
  const out: ({ kind: 'text'; text: string } | { kind: 'action'; body: string })[] = [];
  let i = 0;
  let trimNext = false;
  while (i < src.length) {
    const open = src.indexOf('{{', i);
    let text = open < 0 ? src.slice(i) : src.slice(i, open);
    if (trimNext) text = text.replace(/^\s+/, '');
    if (open < 0) {
      out.push({ kind: 'text', text });
      break;
    }
    const close = src.indexOf('}}', open);
    if (close < 0) throw new Error(`${file}: unclosed {{ at offset ${open}`);
    let body = src.slice(open + 2, close);
    if (body.startsWith('-')) {
      text = text.replace(/\s+$/, '');
      body = body.slice(1);
    }
    trimNext = body.endsWith('-');
    if (trimNext) body = body.slice(0, -1);
    out.push({ kind: 'text', text });
    out.push({ kind: 'action', body: body.trim() });
    i = close + 2;
  }
  return out;
}

function parse(src: string, file: string): Node[] {
  const root: Node[] = [];
  const stack: { nodes: Node[]; node?: Extract<Node, { kind: 'if' }>; inElse: boolean }[] = [{ nodes: root, inElse: false }];
  const cur = () => stack[stack.length - 1];
  for (const t of lex(src, file)) {
    if (t.kind === 'text') {
      if (t.text) cur().nodes.push(t);
      continue;
    }
    const b = t.body;
    if (b.startsWith('/*')) continue;
    if (/^(range|with|define|template|block|include|else if)\b/.test(b)) throw new Error(`${file}: unsupported action {{ ${b} }} (keep the chart within the subset test/deploy/helm-render.ts renders)`);
    const m = /^if\s+(.+)$/.exec(b);
    if (m) {
      const node: Extract<Node, { kind: 'if' }> = { kind: 'if', cond: m[1].trim(), then: [], else: [] };
      cur().nodes.push(node);
      stack.push({ nodes: node.then, node, inElse: false });
    } else if (b === 'else') {
      const top = cur();
      if (!top.node || top.inElse) throw new Error(`${file}: {{ else }} without {{ if }}`);
      top.nodes = top.node.else;
      top.inElse = true;
    } else if (b === 'end') {
      if (stack.length === 1) throw new Error(`${file}: {{ end }} without {{ if }}`);
      stack.pop();
    } else cur().nodes.push({ kind: 'expr', expr: b });
  }
  if (stack.length !== 1) throw new Error(`${file}: {{ if }} without {{ end }}`);
  return root;
}

function lookup(path: string, ctx: RenderContext, file: string): unknown {
  if (!/^\.(Values|Release|Chart)(\.[A-Za-z_][A-Za-z0-9_]*)*$/.test(path)) throw new Error(`${file}: unsupported value reference ${JSON.stringify(path)}`);
  let v: unknown = ctx;
  for (const k of path.slice(1).split('.')) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string, unknown>)[k];
  }
  return v;
}

const truthy = (v: unknown): boolean =>
  !(v === undefined || v === null || v === false || v === 0 || v === '' || (Array.isArray(v) && v.length === 0) || (typeof v === 'object' && v !== null && !Array.isArray(v) && Object.keys(v).length === 0));

/** Go's default formatting of a value in {{ }}. */
function str(v: unknown): string {
  if (v === undefined || v === null) return '';
  if (typeof v === 'object') throw new Error(`a map or list printed without toYaml: ${JSON.stringify(v)}`);
  return String(v);
}

const toYaml = (v: unknown): string => (v === undefined || v === null ? 'null' : YAML.stringify(v, { lineWidth: 0 }).replace(/\n$/, ''));
const indent = (s: string, n: number) => s.split('\n').map((l) => ' '.repeat(n) + l).join('\n');

function evalExpr(expr: string, ctx: RenderContext, file: string): string {
  const stages = expr.split('|').map((s) => s.trim());
  let value: unknown;
  let isString = false;
  const first = stages[0].split(/\s+/);
  if (first.length === 1) value = lookup(first[0], ctx, file);
  else if (first.length === 2 && (first[0] === 'toYaml' || first[0] === 'quote')) {
    const v = lookup(first[1], ctx, file);
    value = first[0] === 'toYaml' ? toYaml(v) : JSON.stringify(str(v));
    isString = true;
  } else throw new Error(`${file}: unsupported action {{ ${expr} }}`);
  for (const stage of stages.slice(1)) {
    const [fn, arg, ...rest] = stage.split(/\s+/);
    if (rest.length) throw new Error(`${file}: unsupported pipeline stage ${JSON.stringify(stage)}`);
    const s = isString ? (value as string) : str(value);
    if (fn === 'quote' && arg === undefined) value = JSON.stringify(s);
    else if (fn === 'toYaml' && arg === undefined) value = toYaml(value);
    else if (fn === 'nindent' && /^\d+$/.test(arg ?? '')) value = '\n' + indent(s, Number(arg));
    else if (fn === 'indent' && /^\d+$/.test(arg ?? '')) value = indent(s, Number(arg));
    else throw new Error(`${file}: unsupported pipeline stage ${JSON.stringify(stage)}`);
    isString = true;
  }
  return isString ? (value as string) : str(value);
}

function evalCond(cond: string, ctx: RenderContext, file: string): boolean {
  const m = /^not\s+(\S+)$/.exec(cond);
  if (m) return !truthy(lookup(m[1], ctx, file));
  if (!/^\S+$/.test(cond)) throw new Error(`${file}: unsupported condition {{ if ${cond} }}`);
  return truthy(lookup(cond, ctx, file));
}

function run(nodes: Node[], ctx: RenderContext, file: string): string {
  let out = '';
  for (const n of nodes) {
    if (n.kind === 'text') out += n.text;
    else if (n.kind === 'expr') out += evalExpr(n.expr, ctx, file);
    else out += run(evalCond(n.cond, ctx, file) ? n.then : n.else, ctx, file);
  }
  return out;
}

export function renderTemplate(src: string, ctx: RenderContext, file = 'template'): string {
  return run(parse(src, file), ctx, file);
}

const isMap = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
function deepMerge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) out[k] = isMap(v) && isMap(out[k]) ? deepMerge(out[k] as Record<string, unknown>, v) : v;
  return out;
}

export interface RenderedChart {
  /** template file → rendered text */
  files: Map<string, string>;
  /** every non-empty YAML document of the .yaml templates, parsed */
  docs: Record<string, any>[];
}

/** Render every template of a chart folder like `helm template NAME DIR --set ...`. */
export function renderChart(chartDir: string, o: { releaseName?: string; namespace?: string; values?: Record<string, unknown> } = {}): RenderedChart {
  const chart = YAML.parse(readFileSync(join(chartDir, 'Chart.yaml'), 'utf8'));
  const values = deepMerge(YAML.parse(readFileSync(join(chartDir, 'values.yaml'), 'utf8')) ?? {}, o.values ?? {});
  const ctx: RenderContext = {
    Values: values,
    Release: { Name: o.releaseName ?? 'release-name', Namespace: o.namespace ?? 'default' },
    Chart: { Name: chart.name, Version: chart.version, AppVersion: chart.appVersion },
  };
  const files = new Map<string, string>();
  const docs: Record<string, any>[] = [];
  for (const f of readdirSync(join(chartDir, 'templates')).sort()) {
    const file = join('templates', f);
    const text = renderTemplate(readFileSync(join(chartDir, file), 'utf8'), ctx, file);
    files.set(file, text);
    if (!f.endsWith('.yaml')) continue;
    for (const d of YAML.parseAllDocuments(text)) {
      if (d.errors.length) throw new Error(`${file}: rendered YAML does not parse: ${d.errors[0].message}\n${text}`);
      const js = d.toJS();
      if (js !== null && js !== undefined) docs.push(js);
    }
  }
  return { files, docs };
}
