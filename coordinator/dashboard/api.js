// The dashboard's side of the coordinator API: every request carries the token the user typed,
// kept in sessionStorage only (gone when the tab closes; never localStorage or a cookie).
// A 401 (no, wrong, expired or revoked token) is an AuthError: the app asks for a token again.
const TOKEN_KEY = 'fedlora.token';

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (t) => sessionStorage.setItem(TOKEN_KEY, t.trim()),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

export class AuthError extends Error {}

async function request(path, init = {}) {
  const t = token.get();
  const r = await fetch(path, { ...init, headers: { accept: 'application/json', ...init.headers, ...(t ? { authorization: `Bearer ${t}` } : {}) } });
  if (r.ok) return r;
  const body = await r.json().catch(() => ({}));
  const msg = body?.error ? `${body.error.code}: ${body.error.message}` : `${path}: HTTP ${r.status}`;
  throw r.status === 401 ? new AuthError(msg) : new Error(msg);
}

export const getJson = async (path) => (await request(path)).json();

export const postJson = async (path, payload) =>
  (await request(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(payload ?? {}) })).json();

/** A file the API serves (adapter, CSV export): fetched with the token, then saved by the browser. */
export async function download(path, filename) {
  const blob = await (await request(path, { headers: { accept: '*/*' } })).blob();
  const url = URL.createObjectURL(blob);
  const a = Object.assign(document.createElement('a'), { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
