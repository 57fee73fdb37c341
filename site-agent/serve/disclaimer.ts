// The site's disclaimer, appended to every answer the assistant gives (page and API alike).
import type { ServeConfig } from './config.ts';

const CJK = /[\u3400-\u9fff\uf900-\ufaff]/;

export function isChinese(text: string): boolean {
  return CJK.test(text);
}

/** The disclaimer for an answer to `question`, in the site's configured language(s). */
export function disclaimerFor(cfg: ServeConfig['disclaimer'], question: string): string {
  if (cfg.language === 'both') return `${cfg.zh}\n${cfg.en}`;
  if (cfg.language === 'zh' || (cfg.language === 'auto' && isChinese(question))) return cfg.zh;
  return cfg.en;
}

/** What separates the answer from the disclaimer; content = answer + DISCLAIMER_SEPARATOR + disclaimer. */
export const DISCLAIMER_SEPARATOR = '\n\n---\n';
