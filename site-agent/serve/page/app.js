// The clinicians' chat page: asks through the OpenAI-compatible API (streamed), shows the answer
// as it arrives, the disclaimer, the adapter version that answered and the cited passages, and
// sends the doctor's confirmation. The API key is kept in this tab's sessionStorage only.
'use strict';
const T = {
  zh: { title: '临床助手', key: 'API 密钥', signin: '登录', question: '问题', ask: '提问', reasoning: '推理过程', sources: '引用来源', confirm: '医生确认',
    accept: '采纳', edit: '修改后采纳', reject: '不采纳', diagnosis: '最终诊断', comment: '备注', save: '提交确认', other: 'English',
    answeredBy: '回答所用模型版本：', saved: '已保存确认 #', badKey: '密钥无效或已撤销', noSources: '（无）', waiting: '正在生成…' },
  en: { title: 'Clinical assistant', key: 'API key', signin: 'Sign in', question: 'Question', ask: 'Ask', reasoning: 'Reasoning', sources: 'Sources', confirm: "Doctor's confirmation",
    accept: 'Accept', edit: 'Accept with edits', reject: 'Reject', diagnosis: 'Final diagnosis', comment: 'Comment', save: 'Save confirmation', other: '中文',
    answeredBy: 'Answered by model version: ', saved: 'Confirmation saved #', badKey: 'Key not recognised or revoked', noSources: '(none)', waiting: 'Generating…' },
};
const SEPARATOR = '\n\n---\n';
let lang = (sessionStorage.getItem('lang') || (navigator.language || 'zh').slice(0, 2)) === 'en' ? 'en' : 'zh';
let key = sessionStorage.getItem('fedlora-key') || '';
let current = null; // {id, content, disclaimer}
let model = 'fedlora-assistant';
const $ = (id) => document.getElementById(id);

function applyLang() {
  document.documentElement.lang = lang;
  for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = T[lang][el.dataset.i18n];
  $('lang').textContent = T[lang].other;
  document.title = T[lang].title;
}

async function api(path, init = {}) {
  const r = await fetch(path, { ...init, headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...(init.headers || {}) } });
  if (!r.ok) {
    const body = await r.json().catch(() => ({}));
    const err = new Error((body.error && body.error.message) || `HTTP ${r.status}`);
    err.status = r.status;
    throw err;
  }
  return r;
}

async function signIn() {
  try {
    const me = await (await api('/api/me')).json();
    sessionStorage.setItem('fedlora-key', key);
    $('who').textContent = `${me.name} (${me.role})`;
    $('version').textContent = me.model_version;
    model = me.model;
    $('signin').hidden = true;
    $('ask').hidden = false;
  } catch (e) {
    $('signin').hidden = false;
    $('ask').hidden = true;
    if (key) $('signin-error').textContent = e.status === 401 ? T[lang].badKey : e.message;
  }
}

function showCitations(citations) {
  const ol = $('citations');
  ol.replaceChildren();
  if (!citations || citations.length === 0) {
    ol.append(Object.assign(document.createElement('li'), { textContent: T[lang].noSources }));
    return;
  }
  for (const c of citations) {
    const li = document.createElement('li');
    li.value = c.n;
    const src = Object.assign(document.createElement('span'), { className: 'src', textContent: `[${c.n}] ${c.source}${c.heading ? ' — ' + c.heading : ''}` });
    li.append(src, document.createElement('br'), document.createTextNode(c.text));
    ol.append(li);
  }
}

async function ask() {
  const q = $('question').value.trim();
  if (!q) return;
  $('ask-error').textContent = '';
  $('result').hidden = false;
  $('answer').textContent = T[lang].waiting;
  $('disclaimer').textContent = '';
  $('reasoning').textContent = '';
  $('reasoning-box').hidden = true;
  $('answered-by').textContent = '';
  $('confirm-status').textContent = '';
  $('citations').replaceChildren();
  $('ask-btn').disabled = true;
  let content = '';
  try {
    const r = await api('/v1/chat/completions', { method: 'POST', body: JSON.stringify({ model, stream: true, messages: [{ role: 'user', content: q }] }) });
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    let started = false;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let nl;
      while ((nl = buf.indexOf('\n\n')) >= 0) {
        const line = buf.slice(0, nl).replace(/^data: /, '');
        buf = buf.slice(nl + 2);
        if (line === '[DONE]') continue;
        const chunk = JSON.parse(line);
        if (chunk.error) throw new Error(chunk.error.message);
        const ch = chunk.choices && chunk.choices[0];
        if (ch && ch.delta) {
          if (ch.delta.reasoning_content) {
            $('reasoning-box').hidden = false;
            $('reasoning').textContent += ch.delta.reasoning_content;
          }
          if (typeof ch.delta.content === 'string') {
            if (!started) { $('answer').textContent = ''; started = true; }
            content += ch.delta.content;
            const cut = content.indexOf(SEPARATOR);
            $('answer').textContent = cut >= 0 ? content.slice(0, cut) : content;
            if (cut >= 0) $('disclaimer').textContent = content.slice(cut + SEPARATOR.length);
          }
        }
        if (chunk.fedlora) {
          current = { id: chunk.fedlora.answer_id, content, disclaimer: chunk.fedlora.disclaimer };
          $('disclaimer').textContent = chunk.fedlora.disclaimer;
          $('answered-by').textContent = T[lang].answeredBy + chunk.fedlora.model_version;
          showCitations(chunk.fedlora.citations);
          $('final-text').value = $('answer').textContent;
        }
      }
    }
  } catch (e) {
    $('ask-error').textContent = e.message;
  } finally {
    $('ask-btn').disabled = false;
  }
}

async function confirmAnswer(ev) {
  ev.preventDefault();
  if (!current) return;
  const verdict = document.querySelector('input[name=verdict]:checked').value;
  const body = { verdict, final_diagnosis: $('final-diagnosis').value.trim() || null, comment: $('comment').value.trim() || null };
  if (verdict === 'edit') body.final_text = $('final-text').value;
  try {
    const saved = await (await api(`/api/answers/${encodeURIComponent(current.id)}/confirmation`, { method: 'POST', body: JSON.stringify(body) })).json();
    $('confirm-status').textContent = T[lang].saved + saved.id;
  } catch (e) {
    $('confirm-status').textContent = e.message;
  }
}

document.addEventListener('DOMContentLoaded', () => {
  applyLang();
  $('lang').addEventListener('click', () => { lang = lang === 'zh' ? 'en' : 'zh'; sessionStorage.setItem('lang', lang); applyLang(); });
  $('signin-btn').addEventListener('click', () => { key = $('key').value.trim(); signIn(); });
  $('ask-btn').addEventListener('click', ask);
  $('confirm').addEventListener('submit', confirmAnswer);
  for (const r of document.querySelectorAll('input[name=verdict]')) r.addEventListener('change', () => { $('final-text').hidden = r.value !== 'edit' || !r.checked; });
  if (key) signIn();
  else $('signin').hidden = false;
});
