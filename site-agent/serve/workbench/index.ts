// The annotation workbench as a page plugin of the site's server: the site's code list, the
// model's suggestions scored by the engine on the version being served (with the vLLM backend,
// by a CPU engine copy of the model loaded on first use), and a background pass that ranks
// labelled records while the assistant is idle (engine backend), so the disagreement queue fills.
import { isAbsolute, join } from 'node:path';
import type { AuditLog } from '../../../shared/audit.ts';
import type { SiteConfig } from '../../config.ts';
import type { ChatMessage } from '../../engine/index.ts';
import { loadCodeList } from '../../data/labels/code-list.ts';
import type { AssistantDeps } from '../answer.ts';
import { createEngineBackend } from '../backend/engine-backend.ts';
import type { GenerationBackend } from '../backend/types.ts';
import { servingFollower } from '../gate/serving.ts';
import type { ServePlugin } from '../server.ts';
import { registerDxKey } from './queues.ts';
import { workbenchRoutes } from './routes.ts';
import { precomputeSuggestions, type SuggestionDeps } from './suggestions.ts';

export interface Workbench {
  plugin: ServePlugin;
  close(): Promise<void>;
}

/** The serving backend when it scores; else the engine on the same model and version. */
function scorerFor(backend: GenerationBackend, site: SiteConfig, assistant: AssistantDeps): { scorer: Pick<GenerationBackend, 'scoreChoices'>; close(): Promise<void> } {
  if (backend.scoreChoices) return { scorer: backend, close: async () => {} };
  let engine: Promise<GenerationBackend> | null = null;
  const follow = servingFollower(assistant.db, async (v) => (await engine!).useVersion(v));
  return {
    scorer: {
      async scoreChoices(messages: ChatMessage[], prefix: string, choices: string[]) {
        const e = await (engine ??= createEngineBackend({ modelDir: site.model.path, device: 'cpu' }));
        await follow();
        return e.scoreChoices!(messages, prefix, choices);
      },
    },
    close: async () => void (engine && (await (await engine).close())),
  };
}

export async function createWorkbench(o: { siteDir: string; site: SiteConfig; backend: GenerationBackend; assistant: AssistantDeps; audit: AuditLog }): Promise<Workbench | null> {
  const cfg = o.site.serve.workbench;
  if (!cfg.enabled) return null;
  const file = cfg.code_list === null ? null : isAbsolute(cfg.code_list) ? cfg.code_list : join(o.siteDir, cfg.code_list);
  const codes = await loadCodeList(file, { encoding: cfg.code_list_encoding });
  registerDxKey(o.assistant.db, codes);
  const scoring = cfg.suggestions.enabled ? scorerFor(o.backend, o.site, o.assistant) : null;
  const suggestions: SuggestionDeps | null = scoring && {
    db: o.assistant.db, codes, scorer: scoring.scorer, serving: o.assistant.serving, queue: o.assistant.queue,
    data: o.site.data, allowedFields: o.site.policy.allowed_fields, config: cfg.suggestions,
  };
  const status = { lastError: null as string | null };
  let pass: Promise<unknown> | null = null;
  // Ranking in the background only with a backend that scores itself: beside vLLM it would load
  // a CPU copy of the model unasked (there, records are ranked when a doctor opens them or an
  // admin asks: POST /api/workbench/suggestions).
  const background = suggestions !== null && o.backend.scoreChoices !== undefined && cfg.suggestions.precompute_per_pass > 0;
  const timer = setInterval(() => {
    const q = o.assistant.queue;
    if (!background || !suggestions || pass || q.active > 0 || q.length > 0) return;
    pass = precomputeSuggestions(suggestions, cfg.suggestions.precompute_per_pass)
      .then(() => (status.lastError = null))
      .catch((e: Error) => {
        status.lastError = `ranking suggestions: ${e.message}`;
        process.stderr.write(`workbench: ranking suggestions for labelled records failed: ${e.message}\n`);
      })
      .finally(() => (pass = null));
  }, 2000);
  timer.unref();
  return {
    plugin: workbenchRoutes({ config: cfg, codes, suggestions, audit: o.audit, status }) as unknown as ServePlugin,
    async close() {
      clearInterval(timer);
      await pass;
      await scoring?.close();
    },
  };
}
