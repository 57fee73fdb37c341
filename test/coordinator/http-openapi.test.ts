// The OpenAPI document at /api/openapi.json is generated from the routes' zod schemas
// (@fastify/swagger + fastify-type-provider-zod): every route fastify serves is in it, with a
// summary, documented path parameters and non-empty answer schemas; routes that need a token
// say so (security + roles), and errors point at the one Error schema.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import type { OpenAPIV3_1 } from 'openapi-types';
import { buildHttpApp } from '../../coordinator/http/app.ts';
import { hashToken } from '../../coordinator/config.ts';
import { harness, rmDir, type Harness } from './helpers.ts';

const TOKEN = 'openapi-admin-token';
let h: Harness;
let app: FastifyInstance;
let doc: OpenAPIV3_1.Document;

beforeAll(async () => {
  h = harness();
  app = await buildHttpApp({ engine: h.engine, config: { admin_tokens: [{ name: 'ops', sha256: hashToken(TOKEN) }] }, manifestKeyPem: h.signer.publicKeyPem });
  const r = await app.inject({ url: '/api/openapi.json', headers: { authorization: `Bearer ${TOKEN}` } });
  expect(r.statusCode).toBe(200);
  doc = r.json();
});
afterAll(async () => {
  await app?.close();
  h?.close();
  if (h) rmDir(h.dir);
});

/** Every route fastify serves, read from its own route tree (printRoutes), not from the document. */
function servedRoutes(tree: string): { method: string; url: string }[] {
  const out: { method: string; url: string }[] = [];
  const stack: string[] = [];
  for (const line of tree.split('\n')) {
    const m = /^([│├└─\s]*)(\S.*?) \(([A-Z, ]+)\)$/.exec(line);
    if (!m) continue;
    const depth = m[1].length / 4;
    stack.length = depth;
    stack.push(m[2]);
    const url = stack.join('').replace(/^\/?/, '/');
    for (const method of m[3].split(', ')) if (method !== 'HEAD') out.push({ method, url });
  }
  return out;
}

const toOpenApiPath = (url: string) => url.replace(/:([A-Za-z_]+)/g, '{$1}');
const nonEmpty = (schema: unknown) => !!schema && typeof schema === 'object' && Object.keys(schema).length > 0;

describe('OpenAPI document', () => {
  it('lists every served route, and nothing else', () => {
    const served = servedRoutes(app.printRoutes({ commonPrefix: false }));
    expect(served.length).toBeGreaterThan(15);
    const documented = Object.entries(doc.paths ?? {}).flatMap(([p, item]) => Object.keys(item ?? {}).map((m) => `${m.toUpperCase()} ${p}`)).sort();
    expect(documented).toEqual(served.map((r) => `${r.method} ${toOpenApiPath(r.url)}`).sort());
  });

  it('every operation has a summary, its path parameters and non-empty answer schemas; token routes say so', () => {
    expect(doc.openapi).toBe('3.1.0');
    for (const [path, item] of Object.entries(doc.paths ?? {})) {
      for (const [method, op] of Object.entries(item ?? {}) as [string, OpenAPIV3_1.OperationObject][]) {
        const where = `${method.toUpperCase()} ${path}`;
        expect(op.summary, where).toMatch(/\w{3}/);
        const params = (op.parameters ?? []) as OpenAPIV3_1.ParameterObject[];
        for (const name of [...path.matchAll(/\{(\w+)\}/g)].map((x) => x[1])) {
          const p = params.find((x) => x.in === 'path' && x.name === name);
          expect(p?.required, `${where}: path parameter ${name}`).toBe(true);
          expect(nonEmpty(p?.schema), `${where}: ${name} schema`).toBe(true);
        }
        const responses = Object.entries(op.responses ?? {}) as [string, OpenAPIV3_1.ResponseObject][];
        expect(responses.length, where).toBeGreaterThan(0);
        for (const [code, res] of responses) {
          const schemas = Object.values(res.content ?? {}).map((c) => c.schema);
          if (code === '302') continue; // a redirect has no body
          expect(schemas.length, `${where} ${code}`).toBeGreaterThan(0);
          for (const s of schemas) expect(nonEmpty(s), `${where} ${code}`).toBe(true);
          if (Number(code) >= 400) expect(schemas).toContainEqual({ $ref: '#/components/schemas/Error' });
        }
        if (method === 'post' && !/cancel$/.test(path)) expect(nonEmpty((op.requestBody as OpenAPIV3_1.RequestBodyObject | undefined)?.content?.['application/json']?.schema), `${where} body`).toBe(true);
        if (op.security) {
          expect(op.security).toEqual([{ bearer: [] }]);
          expect(op.description, where).toMatch(/Roles: (admin|researcher|observer)/);
          expect(Object.keys(op.responses ?? {}), where).toEqual(expect.arrayContaining(['401', '403']));
        }
      }
    }
    expect(doc.components?.securitySchemes?.bearer).toEqual({ type: 'http', scheme: 'bearer' });
    const err = doc.components?.schemas?.Error as OpenAPIV3_1.SchemaObject;
    expect(Object.keys((err.properties?.error as OpenAPIV3_1.SchemaObject).properties ?? {})).toEqual(['code', 'message']);
  });

  it('documents the job spec as the submit body, with its fields and limits', () => {
    const body = (doc.paths?.['/api/jobs']?.post?.requestBody as OpenAPIV3_1.RequestBodyObject).content['application/json'].schema as OpenAPIV3_1.SchemaObject;
    const spec = body.anyOf?.[0] as OpenAPIV3_1.SchemaObject;
    expect(spec.required).toEqual(expect.arrayContaining(['name', 'base_model', 'lora', 'rounds', 'train']));
    expect((spec.properties?.rounds as OpenAPIV3_1.SchemaObject).minimum).toBe(1);
    const kind = (doc.paths?.['/api/jobs/{id}/metrics']?.get?.parameters as OpenAPIV3_1.ParameterObject[]).find((p) => p.name === 'kind');
    expect((kind?.schema as OpenAPIV3_1.SchemaObject).enum).toEqual(['global', 'local', 'base', 'cross', 'personal']);
  });
});
