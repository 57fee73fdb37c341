// Prompt templates for SFT examples and multiple-choice items, in Chinese and English.
// Templates use {{field}} placeholders; a line whose placeholders are all empty (missing, or
// not allowed by the site policy) is dropped, so disallowed fields never reach the model.

import type { CaseRecord } from '../types.ts';

export const CASE_FIELDS = ['department', 'chiefComplaint', 'history', 'exam', 'labs', 'diagnosis', 'icd10', 'treatment'] as const;
export type CaseField = (typeof CASE_FIELDS)[number];

export const TEMPLATES = {
  zh: {
    system: '你是一名临床医生助手。',
    user: '请根据以下病例资料，给出最可能的诊断、诊断依据和处理建议。\n科室：{{department}}\n主诉：{{chiefComplaint}}\n现病史：{{history}}\n体格检查：{{exam}}\n辅助检查：{{labs}}',
    assistant: '诊断：{{diagnosis}}{{icd10Suffix}}\n诊断依据：{{reasoning}}\n处理建议：{{treatment}}',
    choiceQuestion: '以下哪一项是最可能的诊断？',
    choiceInstruction: '请只回答选项字母。',
  },
  en: {
    system: 'You are a clinical decision support assistant.',
    user: 'Given the case below, state the most likely diagnosis, your reasoning and a suggested treatment.\nDepartment: {{department}}\nChief complaint: {{chiefComplaint}}\nHistory: {{history}}\nExamination: {{exam}}\nInvestigations: {{labs}}',
    assistant: 'Diagnosis: {{diagnosis}}{{icd10Suffix}}\nReasoning: {{reasoning}}\nSuggested treatment: {{treatment}}',
    choiceQuestion: 'Which is the most likely diagnosis?',
    choiceInstruction: 'Answer with the letter of the option only.',
  },
} as const;

/** Fill a template; lines left with only empty placeholders are removed. */
export function render(template: string, vars: Record<string, string | undefined>): string {
  return template
    .split('\n')
    .filter((line) => {
      const names = [...line.matchAll(/\{\{(\w+)\}\}/g)].map((m) => m[1]);
      return names.length === 0 || names.some((n) => (vars[n] ?? '') !== '');
    })
    .map((line) => line.replace(/\{\{(\w+)\}\}/g, (_, n: string) => vars[n] ?? ''))
    .join('\n')
    .trim();
}

/** Abnormal findings of a lab string: items flagged ↑/↓/(H)/(L). */
function abnormalLabs(labs: string | undefined): string[] {
  if (!labs) return [];
  return labs
    .split(/[;；]\s*/)
    .map((s) => s.trim())
    .filter((s) => /[↑↓]|\((H|L|HH|LL)\)/.test(s));
}

/** Short rationale built from the allowed findings of the case (there is no free-text reasoning in the records). */
function reasoning(rec: CaseRecord, allowed: Set<CaseField>, lang: 'zh' | 'en'): string {
  const parts: string[] = [];
  if (allowed.has('chiefComplaint') && rec.chiefComplaint) parts.push(lang === 'zh' ? `主诉${rec.chiefComplaint}` : rec.chiefComplaint);
  if (allowed.has('labs')) parts.push(...abnormalLabs(rec.labs));
  if (allowed.has('exam') && rec.exam) parts.push(rec.exam.split(/[;；。]\s*/)[0]);
  const dx = rec.diagnosis ?? '';
  if (parts.length === 0) return '';
  return lang === 'zh' ? `${parts.join('；')}，符合${dx}。` : `${parts.join('; ')}; consistent with ${dx}.`;
}

/** Template variables of a record, with every field the policy does not allow left empty. */
export function caseVars(rec: CaseRecord, allowed: Set<CaseField>, lang: 'zh' | 'en'): Record<string, string | undefined> {
  const v: Record<string, string | undefined> = {};
  for (const f of CASE_FIELDS) v[f] = allowed.has(f) ? rec[f] : undefined;
  v.icd10Suffix = v.icd10 ? (lang === 'zh' ? `（ICD-10：${v.icd10}）` : ` (ICD-10 ${v.icd10})`) : '';
  v.reasoning = reasoning(rec, allowed, lang);
  return v;
}
