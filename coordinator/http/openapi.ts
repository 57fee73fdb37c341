// OpenAPI 3.1 description of the HTTP API (served at /api/openapi.json).
const err = { description: 'error', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } };
const ok = (description: string) => ({ description });
const idParam = { name: 'id', in: 'path', required: true, schema: { type: 'string' } };

export const OPENAPI = {
  openapi: '3.1.0',
  info: { title: 'fedlora coordinator API', version: '1.0.0', description: 'Jobs, rounds, published adapters, metrics and privacy of the federated LoRA coordinator. Writes need an admin bearer token.' },
  components: {
    securitySchemes: { admin: { type: 'http', scheme: 'bearer' } },
    schemas: { Error: { type: 'object', properties: { error: { type: 'object', properties: { code: { type: 'string', example: 'FEDLORA_ERR_NOT_FOUND' }, message: { type: 'string' } }, required: ['code', 'message'] } }, required: ['error'] } },
  },
  paths: {
    '/api/health': { get: { summary: 'liveness', responses: { 200: ok('ok') } } },
    '/api/manifest-key': { get: { summary: 'PEM certificate/public key that verifies publication manifests', responses: { 200: ok('PEM') } } },
    '/api/sites': { get: { summary: 'enrolled sites with last heartbeat', responses: { 200: ok('sites') } } },
    '/api/sites/{id}/status': { post: { summary: 'enable/disable a site', security: [{ admin: [] }], parameters: [idParam], responses: { 200: ok('updated'), 401: err, 403: err } } },
    '/api/jobs': {
      get: { summary: 'list jobs', responses: { 200: ok('jobs') } },
      post: { summary: 'submit a job spec (JSON body, or YAML with Content-Type application/yaml); ?id= optional', security: [{ admin: [] }], responses: { 201: ok('job created'), 400: err, 401: err, 403: err } },
    },
    '/api/jobs/{id}': { get: { summary: 'job status', parameters: [idParam], responses: { 200: ok('job'), 404: err } } },
    '/api/jobs/{id}/cancel': { post: { summary: 'cancel a running job', security: [{ admin: [] }], parameters: [idParam], responses: { 200: ok('job'), 409: err } } },
    '/api/jobs/{id}/rounds': { get: { summary: 'rounds with selection, tasks, updates, timings', parameters: [idParam], responses: { 200: ok('rounds'), 404: err } } },
    '/api/jobs/{id}/adapters': { get: { summary: 'published adapter versions with signed manifests', parameters: [idParam], responses: { 200: ok('versions'), 404: err } } },
    '/api/jobs/{id}/adapters/{version}/{file}': {
      get: {
        summary: 'download a file of a version: adapter_model.safetensors | adapter_config.json | manifest.json | manifest.sig',
        parameters: [idParam, { name: 'version', in: 'path', required: true, schema: { type: 'integer' } }, { name: 'file', in: 'path', required: true, schema: { type: 'string', enum: ['adapter_model.safetensors', 'adapter_config.json', 'manifest.json', 'manifest.sig'] } }],
        responses: { 200: ok('file'), 404: err },
      },
    },
    '/api/jobs/{id}/metrics': {
      get: {
        summary: 'metrics reported by sites (JSON, or CSV with format=csv)',
        parameters: [idParam, ...['site', 'metric', 'kind', 'format'].map((name) => ({ name, in: 'query', required: false, schema: { type: 'string' } }))],
        responses: { 200: ok('metrics'), 400: err, 404: err },
      },
    },
    '/api/jobs/{id}/metrics/summary': {
      get: {
        summary: 'unweighted and count-weighted averages across sites per round/kind/metric (JSON, or CSV with format=csv)',
        parameters: [idParam, ...['site', 'metric', 'kind', 'format'].map((name) => ({ name, in: 'query', required: false, schema: { type: 'string' } }))],
        responses: { 200: ok('summary'), 400: err, 404: err },
      },
    },
    '/api/jobs/{id}/cross-eval': {
      get: {
        summary: 'cross-evaluation matrix {data site x model owner} from kind=cross metrics; available=false when none has run (CSV with format=csv)',
        parameters: [idParam, ...['metric', 'format'].map((name) => ({ name, in: 'query', required: false, schema: { type: 'string' } }))],
        responses: { 200: ok('matrix'), 404: err },
      },
      post: { summary: 'request a cross-evaluation (recorded; tasks go to consenting sites); body {sites?: string[]}', security: [{ admin: [] }], parameters: [idParam], responses: { 202: ok('request recorded'), 401: err, 403: err, 404: err } },
    },
    '/metrics': { get: { summary: 'Prometheus text exposition 0.0.4', responses: { 200: ok('metrics') } } },
    '/dashboard/': { get: { summary: 'researchers dashboard (static HTML/JS)', responses: { 200: ok('HTML') } } },
    '/api/jobs/{id}/privacy': { get: { summary: 'privacy ledger (epsilon per round)', parameters: [idParam], responses: { 200: ok('ledger'), 404: err } } },
    '/api/openapi.json': { get: { summary: 'this document', responses: { 200: ok('OpenAPI') } } },
  },
} as const;
