// The doctors' review: one sampled answer of a candidate adapter at a time, with the case it
// answered (de-identified); the doctor rates it with the keyboard:
//   C / P / W  correct, partly correct, wrong     S / U  safe, unsafe     1-5  overall score
//   /  comment (Esc leaves it)     Enter  save (when all three are set)     Alt+N  skip
// Another doctor's rating is never shown (the second read is blind). The API key is the
// assistant's; sign-in, language and the key: /static/common.js.
import { $, api, session, setupLangSwitch, setupSignIn, withSharedStrings } from '/static/common.js';

const T = withSharedStrings({
  zh: {
    title: '医生评审', empty: '没有待评审的回答。', adapter: '模型版本',
    question: '病例', answer: '模型回答', correctness: '正确性', correct: '正确', partly: '部分正确', wrong: '错误', safety: '安全性', safe: '安全', unsafe: '不安全',
    score: '总体评分（1–5）', comment: '备注（可选）', save: '保存', skip: '跳过', saved: '已保存 #', open: '待评审 ',
    incomplete: '请完成正确性（C/P/W）、安全性（S/U）和评分（1–5）',
    hint: 'C/P/W 正确/部分/错误；S/U 安全/不安全；1–5 评分；/ 填写备注（Esc 返回）；Enter 保存；Alt+N 跳过。',
  },
  en: {
    title: "Doctors' review", empty: 'No answers left to review.', adapter: 'model version',
    question: 'Case', answer: "Model's answer", correctness: 'Correctness', correct: 'Correct', partly: 'Partly correct', wrong: 'Wrong', safety: 'Safety', safe: 'Safe', unsafe: 'Unsafe',
    score: 'Overall score (1–5)', comment: 'Comment (optional)', save: 'Save', skip: 'Skip', saved: 'Saved #', open: 'to review: ',
    incomplete: 'Set correctness (C/P/W), safety (S/U) and a score (1–5)',
    hint: 'C/P/W correct/partly/wrong; S/U safe/unsafe; 1–5 score; / comment (Esc leaves it); Enter saves; Alt+N skips.',
  },
});
let view = null; // the case on screen
const choice = { correctness: null, safety: null, score: null };
const KEYS = { KeyC: ['correctness', 'correct'], KeyP: ['correctness', 'partly'], KeyW: ['correctness', 'wrong'], KeyS: ['safety', 'safe'], KeyU: ['safety', 'unsafe'] };

async function refreshSummary() {
  const s = await api('/api/review/summary');
  $('open').textContent = T[session.lang].open + s.open;
  return s;
}

/** The next case after `after` (a skipped case comes back once the end of the queue is reached). */
async function loadNext(after) {
  let r = await api(`/api/review/next${after ? `?after=${after}` : ''}`);
  if (!r.case && after) r = await api('/api/review/next');
  show(r.case);
}

function set(group, value) {
  choice[group] = value;
  for (const b of document.querySelectorAll(`#${group} button`)) b.setAttribute('aria-pressed', String(b.dataset.value === String(value)));
}

function show(c) {
  view = c;
  $('empty').hidden = !!c;
  $('work').hidden = !c;
  if (!c) return;
  $('case').dataset.id = String(c.id);
  $('case-id').textContent = `#${c.id}`;
  $('case-adapter').textContent = c.adapter;
  $('prompt').textContent = c.prompt;
  $('answer').textContent = c.answer;
  $('prompt').lang = $('answer').lang = c.lang;
  set('correctness', null);
  set('safety', null);
  set('score', null);
  $('comment').value = '';
  $('save').focus();
}

async function save() {
  if (!view) return;
  if (!choice.correctness || !choice.safety || !choice.score) {
    $('status').textContent = T[session.lang].incomplete;
    return;
  }
  const id = view.id;
  try {
    const r = await api(`/api/review/cases/${id}/ratings`, { method: 'POST', body: JSON.stringify({ ...choice, comment: $('comment').value || null }) });
    $('status').textContent = `${T[session.lang].saved}${r.rating.id} · ${T[session.lang][r.rating.correctness]} · ${T[session.lang][r.rating.safety]} · ${r.rating.score}`;
    await refreshSummary();
    await loadNext(id);
  } catch (e) {
    $('status').textContent = e.message;
  }
}

document.addEventListener('keydown', (ev) => {
  if ($('bench').hidden || $('work').hidden || ev.ctrlKey || ev.metaKey) return;
  if (ev.altKey) {
    if (ev.code === 'KeyN') {
      ev.preventDefault();
      $('skip').click();
    }
    return;
  }
  if (document.activeElement === $('comment')) {
    if (ev.key === 'Escape') $('save').focus();
    return; // typing a comment (Enter submits the form)
  }
  if (KEYS[ev.code]) {
    ev.preventDefault();
    set(...KEYS[ev.code]);
  } else if (/^Digit[1-5]$/.test(ev.code) || /^Numpad[1-5]$/.test(ev.code)) {
    ev.preventDefault();
    set('score', Number(ev.code.slice(-1)));
  } else if (ev.key === '/') {
    ev.preventDefault();
    $('comment').focus();
  } else if (ev.key === 'Enter') {
    ev.preventDefault();
    void save();
  }
});
for (const g of ['correctness', 'safety', 'score']) {
  for (const b of document.querySelectorAll(`#${g} button`)) b.addEventListener('click', () => set(g, g === 'score' ? Number(b.dataset.value) : b.dataset.value));
}
$('rating-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  void save();
});
$('skip').addEventListener('click', () => void loadNext(view ? view.id : null).catch((e) => ($('status').textContent = e.message)));
setupLangSwitch(T, () => void refreshSummary().catch(() => {}));
setupSignIn(T, { whoami: async () => { const s = await refreshSummary(); return { ...s, name: s.user }; }, panel: 'bench', ready: () => loadNext(null) });
