// /api/jobs/:id/adapters (published versions) and downloads of a version's files.
import { createReadStream } from 'node:fs';
import type { FastifyPluginAsync } from 'fastify';
import { fail } from '../../shared/errors.ts';
import type { RoundEngine } from '../rounds/engine.ts';
import { adapterFiles } from '../publish/publisher.ts';

export const adapterRoutes: FastifyPluginAsync<{ engine: RoundEngine }> = async (app, { engine }) => {
  app.get<{ Params: { id: string } }>('/api/jobs/:id/adapters', async (req) => {
    if (!engine.store.job(req.params.id)) throw fail('FEDLORA_ERR_NOT_FOUND', `job ${req.params.id} does not exist`);
    return {
      versions: engine.store.adapterVersions(req.params.id).map((v) => ({
        version: v.version, round: v.round, sha256: v.sha256, size: v.size, manifest_sha256: v.manifest_sha256, created: new Date(v.created_ms).toISOString(),
        manifest: JSON.parse(v.manifest_json), signature: v.signature,
      })),
    };
  });
  app.get<{ Params: { id: string; version: string; file: string } }>('/api/jobs/:id/adapters/:version/:file', async (req, reply) => {
    const version = Number(req.params.version);
    if (!Number.isInteger(version) || version < 0) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `version ${JSON.stringify(req.params.version)} is not a non-negative integer`);
    const row = engine.store.adapterVersion(req.params.id, version);
    if (!row) throw fail('FEDLORA_ERR_NOT_FOUND', `job ${req.params.id} has no adapter version ${version}`);
    const f = adapterFiles(row);
    reply.header('Content-Disposition', `attachment; filename="${req.params.file}"`);
    switch (req.params.file) {
      case 'adapter_model.safetensors':
        reply.header('X-Content-SHA256', row.sha256);
        return reply.type('application/octet-stream').send(createReadStream(f.model));
      case 'adapter_config.json':
        return reply.type('application/json').send(createReadStream(f.config));
      case 'manifest.json':
        return reply.type('application/json').send(row.manifest_json);
      case 'manifest.sig':
        return reply.type('text/plain').send(row.signature);
      default:
        throw fail('FEDLORA_ERR_NOT_FOUND', `no file ${req.params.file} (adapter_model.safetensors | adapter_config.json | manifest.json | manifest.sig)`);
    }
  });
};
