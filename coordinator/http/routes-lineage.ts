// /api/jobs/:id/lineage (the signed manifest chain from the root job's v0, across the jobs a job
// continues) and /api/versions (every published version with its parent: the version tree).
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { fail } from '../../shared/errors.ts';
import type { RoundEngine } from '../rounds/index.ts';
import { lineageChain, versionTree } from '../publish/lineage.ts';
import { READERS } from './access.ts';
import { errors, JobParams } from './schemas.ts';

const VersionRef = z.object({ job_id: z.string(), version: z.number().int() });

export const lineageRoutes: FastifyPluginAsyncZod<{ engine: RoundEngine }> = async (app, { engine }) => {
  app.get('/api/jobs/:id/lineage', {
    config: { access: READERS },
    schema: {
      summary: 'signed manifests from the root job\'s version 0 to this job\'s last version (one chain across the jobs it continues; verify with verifyManifestChain)',
      params: JobParams,
      response: { 200: z.object({ chain: z.array(VersionRef.extend({ manifest_sha256: z.string(), manifest_json: z.string(), signature: z.string() })) }), ...errors(404) },
    },
  }, async (req) => {
    if (!engine.store.job(req.params.id)) throw fail('FEDLORA_ERR_NOT_FOUND', `job ${req.params.id} does not exist`);
    return { chain: lineageChain(engine.store, req.params.id).map((r) => ({ job_id: r.job_id, version: r.version, manifest_sha256: r.manifest_sha256, manifest_json: r.manifest_json, signature: r.signature })) };
  });
  app.get('/api/versions', {
    config: { access: READERS },
    schema: {
      summary: 'the version tree: every published version of every job with its parent (the previous version, or for a version 0 the version of an earlier job it continues)',
      response: {
        200: z.object({
          versions: z.array(VersionRef.extend({
            job_name: z.string(), round: z.number().int(), manifest_sha256: z.string(), contributing_sites: z.number().int(), created: z.string(), parent: VersionRef.nullable(),
          })),
        }),
      },
    },
  }, async () => ({ versions: versionTree(engine.store) }));
};
