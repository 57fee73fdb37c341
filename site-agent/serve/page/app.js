// The clinicians' chat page: asks through the OpenAI-compatible API (streamed), shows the answer
// as it arrives, the disclaimer, the adapter version that answered and the cited passages, and
// sends the doctor's confirmation. Sign-in, language and the API key: common.js.
import { $, api, apiFetch, session, setupLangSwitch, setupSignIn, withSharedStrings } from './common.js';

const T = withSharedStrings({
  zh: { title: '临床助手', question: '问题', ask: '提问', reasoning: '推理过程', sources: '引用来源', confirm: '医生确认',
    accept: '采纳', edit: '修改后采纳', reject: '不采纳', diagnosis: '最终诊断', comment: '备注', save: '提交确认',
    answeredBy: '回答所用模型版本：', saved: '已保存确认 #', noSources: '（无）', waiting: '正在生成…' },
  en: { title: 'Clinical assistant', question: 'Question', ask: 'Ask', reasoning: 'Reasoning', sources: 'Sources', confirm: "Doctor's confirmation",
    accept: 'Accept', edit: 'Accept with edits', reject: 'Reject', diagnosis: 'Final diagnosis', comment: 'Comment', save: 'Save confirmation',
    answeredBy: 'Answered by model version: ', saved: 'Confirmation saved #', noSources: '(none)', waiting: 'Generating…' },
});
const SEPARATOR = '\n\n---\n';
let current = null; // {id, content, disclaimer}
let model = 'fedlora-assistant';

function signedIn(me) {
  $('version').textContent = me.model_version;
  model = me.model;
}

function showCitations(citations) {
  const ol = $('citations');
  ol.replaceChildren();
  if (!citations || citations.length === 0) {
    ol.append(Object.assign(document.createElement('li'), { textContent: T[session.lang].noSources }));
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
  $('answer').textContent = T[session.lang].waiting;
  $('disclaimer').textContent = '';
  $('reasoning').textContent = '';
  $('reasoning-box').hidden = true;
  $('answered-by').textContent = '';
  $('confirm-status').textContent = '';
  $('citations').replaceChildren();
  $('ask-btn').disabled = true;
  let content = '';
  try {
    const r = await apiFetch('/v1/chat/completions', { method: 'POST', body: JSON.stringify({ model, stream: true, messages: [{ role: 'user', content: q }] }) });
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
          $('answered-by').textContent = T[session.lang].answeredBy + chunk.fedlora.model_version;
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
    const saved = await api(`/api/answers/${encodeURIComponent(current.id)}/confirmation`, { method: 'POST', body: JSON.stringify(body) });
    $('confirm-status').textContent = T[session.lang].saved + saved.id;
  } catch (e) {
    $('confirm-status').textContent = e.message;
  }
}

// A module runs once the document is parsed.
setupLangSwitch(T);
$('ask-btn').addEventListener('click', ask);
$('confirm').addEventListener('submit', confirmAnswer);
for (const r of document.querySelectorAll('input[name=verdict]')) r.addEventListener('change', () => { $('final-text').hidden = r.value !== 'edit' || !r.checked; });
setupSignIn(T, { whoami: () => api('/api/me'), panel: 'ask', ready: signedIn });
