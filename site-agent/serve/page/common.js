// What the assistant's three pages (chat /, review /review, workbench /workbench) share: the API
// key and the language kept in this tab's sessionStorage only, the zh/en switch, the api()
// helper and the sign-in form (signin.html, put into each page by the server).
export const $ = (id) => document.getElementById(id);

export const session = {
  lang: (sessionStorage.getItem('lang') || (navigator.language || 'zh').slice(0, 2)) === 'en' ? 'en' : 'zh',
  key: sessionStorage.getItem('fedlora-key') || '',
};

/** The strings of the shared parts, added to a page's own table ({zh: {...}, en: {...}}). */
export function withSharedStrings(T) {
  const shared = {
    zh: { key: 'API 密钥', signin: '登录', other: 'English', chat: '临床助手', badKey: '密钥无效或已撤销' },
    en: { key: 'API key', signin: 'Sign in', other: '中文', chat: 'Clinical assistant', badKey: 'Key not recognised or revoked' },
  };
  return { zh: { ...shared.zh, ...T.zh }, en: { ...shared.en, ...T.en } };
}

/** Every [data-i18n] element, the switch and the title in the current language. */
export function applyLang(T) {
  const s = T[session.lang];
  document.documentElement.lang = session.lang;
  for (const e of document.querySelectorAll('[data-i18n]')) e.textContent = s[e.dataset.i18n];
  $('lang').textContent = s.other;
  document.title = s.title;
}

/** Show the page in its language now; the switch flips it, then calls `after` (to redraw what the page wrote itself). */
export function setupLangSwitch(T, after = () => {}) {
  applyLang(T);
  $('lang').addEventListener('click', () => {
    session.lang = session.lang === 'zh' ? 'en' : 'zh';
    sessionStorage.setItem('lang', session.lang);
    applyLang(T);
    after();
  });
}

/** fetch with the key; an answer other than 2xx throws an Error with the server's message and its `status`. */
export async function apiFetch(path, init = {}) {
  const r = await fetch(path, { ...init, headers: { authorization: `Bearer ${session.key}`, 'content-type': 'application/json', ...(init.headers || {}) } });
  if (!r.ok) {
    const body = await r.json().catch(() => ({}));
    const err = new Error((body.error && body.error.message) || `HTTP ${r.status}`);
    err.status = r.status;
    throw err;
  }
  return r;
}

/** apiFetch, answering the parsed JSON body. */
export async function api(path, init = {}) {
  return (await apiFetch(path, init)).json().catch(() => ({}));
}

/**
 * The sign-in form. With a key (typed, or kept from earlier in this tab) `whoami()` asks the
 * server who it belongs to ({name, role, ...}); then the key is kept, #who names the user, the
 * element `panel` replaces the form and `ready(answer)` runs. A refused key (or a failing
 * `ready`) brings the form back with the reason.
 */
export function setupSignIn(T, { whoami, panel, ready = async () => {} }) {
  async function signIn() {
    if (!session.key) {
      $('signin').hidden = false;
      $('key').focus();
      return;
    }
    try {
      const me = await whoami();
      sessionStorage.setItem('fedlora-key', session.key);
      $('who').textContent = `${me.name} (${me.role})`;
      $('signin').hidden = true;
      $(panel).hidden = false;
      await ready(me);
    } catch (e) {
      $('signin').hidden = false;
      $(panel).hidden = true;
      $('signin-error').textContent = e.status === 401 ? T[session.lang].badKey : e.message;
      $('key').focus();
    }
  }
  $('signin-btn').addEventListener('click', () => {
    session.key = $('key').value.trim();
    void signIn();
  });
  $('key').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter') $('signin-btn').click();
  });
  void signIn();
}
