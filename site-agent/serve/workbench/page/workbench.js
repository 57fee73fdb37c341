// The annotation workbench: queues of records, one record at a time, de-identified; the doctor
// types a code or a name (the site's code list is searched as they type), or picks from the
// model's suggestions / the reads in dispute / the label under review, all with the keyboard:
//   ↓ ↑ move in the list (on an empty field: the quick picks), Enter saves the highlighted entry
//   (or the typed text when none is highlighted; Esc closes the list), Alt+N skips,
//   Alt+1..4 switch queues.
// The API key is the assistant's; sign-in, language and the key: /static/common.js.
import { $, api, session, setupLangSwitch, setupSignIn, withSharedStrings } from '/static/common.js';

const T = withSharedStrings({
  zh: {
    title: '标注工作台', q_unlabelled: '待标注', q_disagree: '模型不同意', q_dispute: '待裁决', q_mine: '我的标注',
    empty: '此队列已无病例。', reads: '两位医生的诊断', suggestions: '模型建议', diagnosis: '诊断', comment: '备注', save: '保存', skip: '跳过',
    record: '病例', state: '状态', when: '时间', correct: '更正', saved: '已保存 #', needDx: '请输入或选择诊断',
    hint: '输入编码或名称搜索；↓↑ 选择，Enter 保存（Esc 后 Enter 保存所输入文本）；Alt+N 跳过；Alt+1–4 切换队列。',
    hidden: '本次阅片不显示模型建议（用于评估建议偏倚）。', unavailable: '模型建议暂不可用：', byModel: '模型版本 ',
    underReview: { export: '当前标注（导出数据）：', doctor: '当前标注（医生）：', assistant: '当前标注（助手确认）：', mine: '我的标注：' },
    fields: { chiefComplaint: '主诉', history: '现病史', exam: '体格检查', labs: '辅助检查', treatment: '处理' },
    status: { single: '已标注', pending_second: '等待第二位医生', agreed: '两位医生一致', disputed: '有分歧，待裁决', adjudicated: '已裁决' },
    notes: { read: '医生', label: '当前标注', mine: '我的标注', model: '模型' },
  },
  en: {
    title: 'Annotation workbench', q_unlabelled: 'Unlabelled', q_disagree: 'Model disagrees', q_dispute: 'To adjudicate', q_mine: 'My labels',
    empty: 'No records left in this queue.', reads: "The two doctors' diagnoses", suggestions: "Model's suggestions", diagnosis: 'Diagnosis', comment: 'Comment', save: 'Save', skip: 'Skip',
    record: 'Record', state: 'Status', when: 'When', correct: 'Correct', saved: 'Saved #', needDx: 'Type or pick a diagnosis',
    hint: 'Type a code or name to search; ↓↑ to choose, Enter saves (after Esc, Enter saves the typed text); Alt+N skips; Alt+1–4 switch queues.',
    hidden: 'Suggestions are hidden for this read (to measure suggestion bias).', unavailable: 'Suggestions unavailable: ', byModel: 'model version ',
    underReview: { export: 'Current label (export): ', doctor: 'Current label (doctor): ', assistant: 'Current label (assistant confirmation): ', mine: 'My label: ' },
    fields: { chiefComplaint: 'Chief complaint', history: 'History', exam: 'Examination', labs: 'Investigations', treatment: 'Treatment' },
    status: { single: 'labelled', pending_second: 'waiting for a second doctor', agreed: 'two doctors agree', disputed: 'in dispute', adjudicated: 'adjudicated' },
    notes: { read: 'doctor', label: 'current label', mine: 'my label', model: 'model' },
  },
});
let queue = 'unlabelled';
let view = null; // the record on screen
let options = []; // [{diagnosis, icd10, note}]
let active = -1;
let picked = null;
let searchSeq = 0;
function el(tag, props = {}, ...kids) {
  const e = Object.assign(document.createElement(tag), props);
  e.append(...kids);
  return e;
}


async function refreshCounts() {
  const s = await api('/api/workbench/summary');
  for (const q of ['unlabelled', 'disagree', 'dispute']) $(`count-${q}`).textContent = `(${s.queues[q]})`;
  $('version').textContent = s.model_version;
  return s;
}

async function selectQueue(q) {
  queue = q;
  for (const b of document.querySelectorAll('#queues button')) b.setAttribute('aria-selected', String(b.dataset.queue === q));
  $('status').textContent = '';
  if (q === 'mine') return showMine();
  $('mine').hidden = true;
  await loadNext(null);
}

async function loadNext(after) {
  const r = await api(`/api/workbench/queues/${queue}/next${after ? `?after=${encodeURIComponent(after)}` : ''}`);
  show(r.record);
}

const codeText = (o) => (o.icd10 ? `${o.icd10} ${o.diagnosis}` : o.diagnosis);

function show(record) {
  view = record;
  $('empty').hidden = !!record;
  $('work').hidden = !record;
  if (!record) return;
  $('record').dataset.id = record.id;
  $('record').dataset.queue = record.queue;
  $('rec-id').textContent = `#${record.id.slice(0, 12)}`;
  $('rec-dept').textContent = record.department || '';
  $('fields').replaceChildren(...record.fields.flatMap((f) => [el('dt', { textContent: T[session.lang].fields[f.field] }), el('dd', { textContent: f.text })]));
  $('under-review').hidden = !record.label;
  if (record.label) $('under-review').textContent = T[session.lang].underReview[record.label.source] + codeText(record.label) + (record.label.by ? ` — ${record.label.by}` : '');
  $('reads').hidden = record.reads.length === 0;
  $('reads-list').replaceChildren(...record.reads.map((r) => el('li', { textContent: `${r.user}: ${codeText(r)}` })));
  const s = record.suggestions;
  $('suggest-box').hidden = !s && !record.suggestionsError;
  $('suggestions').replaceChildren(...(s && s.items ? s.items.map((x) => el('li', {}, el('span', { textContent: codeText(x) }), el('span', { className: 'score', textContent: `  ${x.meanLogLikelihood.toFixed(3)}` }))) : []));
  $('suggest-note').textContent = record.suggestionsError ? T[session.lang].unavailable + record.suggestionsError : s && !s.shown ? T[session.lang].hidden : s ? T[session.lang].byModel + s.modelVersion : '';
  $('dx').value = '';
  $('comment').value = '';
  picked = null;
  setOptions([]);
  $('dx').focus();
}

/** On an empty field: the reads in dispute, the label under review and the shown suggestions. */
function quickPicks() {
  if (!view) return [];
  const n = T[session.lang].notes;
  const picks = view.reads.map((r) => ({ diagnosis: r.diagnosis, icd10: r.icd10, note: `${n.read} ${r.user}` }));
  if (view.label) picks.push({ diagnosis: view.label.diagnosis, icd10: view.label.icd10, note: view.label.source === 'mine' ? n.mine : n.label });
  if (view.suggestions && view.suggestions.items) for (const x of view.suggestions.items) picks.push({ diagnosis: x.diagnosis, icd10: x.icd10, note: n.model });
  return picks;
}

function setOptions(list, highlight = -1) {
  options = list;
  active = list.length ? highlight : -1;
  const ul = $('options');
  ul.replaceChildren(...list.map((o, i) => {
    const li = el('li', { id: `opt-${i}`, role: 'option' }, el('span', { textContent: codeText(o) }), ...(o.note ? [el('span', { className: 'note', textContent: o.note })] : []));
    li.setAttribute('aria-selected', String(i === active));
    li.addEventListener('mousedown', (ev) => {
      ev.preventDefault();
      choose(o);
      save();
    });
    return li;
  }));
  ul.hidden = list.length === 0;
  $('dx').setAttribute('aria-expanded', String(list.length > 0));
  if (active >= 0) $('dx').setAttribute('aria-activedescendant', `opt-${active}`);
  else $('dx').removeAttribute('aria-activedescendant');
}

function move(delta) {
  if (!options.length) return setOptions(quickPicks(), delta > 0 ? 0 : -1);
  active = (active + delta + options.length + 1) % (options.length + 1);
  if (active === options.length) active = -1;
  setOptions(options, active);
  const li = $(`opt-${active}`);
  if (li) li.scrollIntoView({ block: 'nearest' });
}

function choose(o) {
  picked = o;
  $('dx').value = codeText(o);
}

async function search() {
  const q = $('dx').value.trim();
  picked = null;
  const seq = ++searchSeq;
  if (!q) return setOptions(quickPicks());
  const r = await api(`/api/workbench/codes?q=${encodeURIComponent(q)}`);
  if (seq !== searchSeq) return; // a newer keystroke answered first
  // The label is in the record's language: it becomes the record's training target.
  const name = (c) => (view && view.lang === 'en' ? c.en || c.zh : c.zh || c.en);
  setOptions(r.codes.map((c) => ({ diagnosis: name(c), icd10: c.code })), 0);
}

async function save() {
  if (!view) return;
  const typed = $('dx').value.trim();
  if (!typed) {
    $('status').textContent = T[session.lang].needDx;
    return;
  }
  $('status').textContent = '';
  const label = picked && codeText(picked) === typed ? picked : { diagnosis: typed, icd10: null };
  const q = queue === 'mine' ? 'mine' : view.queue;
  try {
    const r = await api(`/api/workbench/records/${encodeURIComponent(view.id)}/labels`, {
      method: 'POST',
      body: JSON.stringify({ queue: q, diagnosis: label.diagnosis, icd10: label.icd10, suggestion_id: view.suggestions ? view.suggestions.id : null, comment: $('comment').value.trim() || null }),
    });
    const msg = `${T[session.lang].saved}${r.label.id} · ${codeText(r.label)} · ${T[session.lang].status[r.record.status]}`;
    await refreshCounts();
    if (queue === 'mine') await showMine();
    else await loadNext(null);
    $('status').textContent = msg;
  } catch (e) {
    $('status').textContent = e.message;
  }
}

async function showMine() {
  $('work').hidden = true;
  $('empty').hidden = true;
  const r = await api('/api/workbench/mine');
  $('mine').hidden = false;
  $('mine-rows').replaceChildren(...r.labels.map((l) => {
    const b = el('button', { type: 'button', textContent: T[session.lang].correct });
    b.addEventListener('click', async () => {
      const v = await api(`/api/workbench/records/${encodeURIComponent(l.record_id)}?queue=mine`);
      $('mine').hidden = true;
      show(v.record);
    });
    return el('tr', {}, el('td', { textContent: `#${l.record_id.slice(0, 12)}` }), el('td', { textContent: codeText(l) }), el('td', { textContent: T[session.lang].status[l.status] }), el('td', { textContent: l.created_at.replace('T', ' ').slice(0, 16) }), el('td', {}, b));
  }));
  const first = $('mine-rows').querySelector('button');
  if (first) first.focus();
}

$('dx').addEventListener('input', () => void search().catch((e) => ($('status').textContent = e.message)));
$('dx').addEventListener('focus', () => {
  if (!$('dx').value) setOptions(quickPicks());
});
$('dx').addEventListener('blur', () => setOptions([]));
$('dx').addEventListener('keydown', (ev) => {
  if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
    ev.preventDefault();
    move(ev.key === 'ArrowDown' ? 1 : -1);
  } else if (ev.key === 'Escape') {
    setOptions([]);
  } else if (ev.key === 'Enter') {
    ev.preventDefault();
    if (active >= 0 && options[active]) choose(options[active]);
    setOptions([]);
    void save();
  }
});
$('label-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  void save();
});
$('skip').addEventListener('click', () => void loadNext(view ? view.id : null).catch((e) => ($('status').textContent = e.message)));
for (const b of document.querySelectorAll('#queues button')) b.addEventListener('click', () => void selectQueue(b.dataset.queue).catch((e) => ($('status').textContent = e.message)));
// Alt+1..4 and Alt+N handled here rather than by accesskey: browsers differ in the modifiers an
// accesskey takes (Alt, Alt+Shift, Ctrl+Alt), and the page's hint names one.
const QUEUE_KEYS = { Digit1: 'unlabelled', Digit2: 'disagree', Digit3: 'dispute', Digit4: 'mine' };
document.addEventListener('keydown', (ev) => {
  if (!ev.altKey || ev.ctrlKey || ev.metaKey || $('bench').hidden) return;
  if (QUEUE_KEYS[ev.code]) {
    ev.preventDefault();
    void selectQueue(QUEUE_KEYS[ev.code]).catch((e) => ($('status').textContent = e.message));
  } else if (ev.code === 'KeyN' && !$('work').hidden) {
    ev.preventDefault();
    $('skip').click();
  }
});
setupLangSwitch(T, () => {
  if (view && !$('work').hidden) show(view);
});
setupSignIn(T, { whoami: async () => { const s = await refreshCounts(); return { ...s, name: s.user }; }, panel: 'bench', ready: () => selectQueue('unlabelled') });
