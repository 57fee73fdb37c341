// /api/jobs/:id/adapters (published versions) and downloads of a version's files.
import { createReadStream } from 'node:fs';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { fail } from '../../shared/errors.ts';
import type { RoundEngine } from '../rounds/index.ts';
import { adapterFiles } from '../publish/publisher.ts';
import { READERS, callerOf } from './access.ts';
import { AdapterFileParams, AdapterVersion, errors, JobParams, media } from './schemas.ts';

/** A file streamed as it is (fastify never serialises a stream; the schema documents it as binary). */
const fileStream = (path: string) => createReadStream(path) as unknown as string;

export const adapterRoutes: FastifyPluginAsyncZod<{ engine: RoundEngine }> = async (app, { engine }) => {
  app.get('/api/jobs/:id/adapters', {
    config: { access: READERS },
    schema: { summary: 'published adapter versions with their signed manifests', params: JobParams, response: { 200: z.object({ versions: z.array(AdapterVersion) }), ...errors(404) } },
  }, async (req) => {
    if (!engine.store.job(req.params.id)) throw fail('FEDLORA_ERR_NOT_FOUND', `job ${req.params.id} does not exist`);
    return {
      versions: engine.store.adapterVersions(req.params.id).map((v) => ({
        version: v.version, round: v.round, sha256: v.sha256, size: v.size, manifest_sha256: v.manifest_sha256, created: new Date(v.created_ms).toISOString(),
        manifest: JSON.parse(v.manifest_json) as Record<string, unknown>, signature: v.signature,
      })),
    };
  });
  app.get('/api/jobs/:id/adapters/:version/:file', {
    config: { access: READERS, audit: 'adapter_download' },
    schema: {
      summary: 'download a file of a published version (a PEFT folder: adapter_model.safetensors, adapter_config.json; and manifest.json + manifest.sig); researchers only if the job spec has access.researcher_downloads: true',
      params: AdapterFileParams, response: { 200: media('application/octet-stream', 'the file (safetensors bytes, JSON, or the base64 signature)', 'binary'), ...errors(400, 404) },
    },
  }, async (req, reply) => {
    const { id, version, file } = req.params;
    const caller = callerOf(req);
    const job = engine.store.job(id);
    if (!job) throw fail('FEDLORA_ERR_NOT_FOUND', `job ${id} does not exist`);
    if (caller.role !== 'admin' && JSON.parse(job.spec_json).access?.researcher_downloads !== true) {
      throw fail('FEDLORA_ERR_ROLE', `job ${id} does not let researchers download its adapters (job spec access.researcher_downloads is not true); ask an admin`);
    }
    const row = engine.store.adapterVersion(id, version);
    if (!row) throw fail('FEDLORA_ERR_NOT_FOUND', `job ${id} has no adapter version ${version}`);
    const f = adapterFiles(row);
    reply.header('Content-Disposition', `attachment; filename="${file}"`);
    switch (file) {
      case 'adapter_model.safetensors':
        reply.header('X-Content-SHA256', row.sha256);
        return reply.type('application/octet-stream').send(fileStream(f.model));
      case 'adapter_config.json':
        return reply.type('application/json').send(fileStream(f.config));
      case 'manifest.json':
        return reply.type('application/json').send(row.manifest_json);
      case 'manifest.sig':
        return reply.type('text/plain').send(row.signature);
    }
  });
};
