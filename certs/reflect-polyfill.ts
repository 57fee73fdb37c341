// @peculiar/x509 pulls in tsyringe, which refuses to load without a Reflect metadata
// polyfill (normally the `reflect-metadata` package, which is not installed). tsyringe only
// uses getMetadata / getOwnMetadata / defineMetadata, so a WeakMap-backed version is enough.
// Imported for its side effect before @peculiar/x509 (see certs/x509.ts).
type Key = unknown;
const store = new WeakMap<object, Map<string | symbol | undefined, Map<Key, unknown>>>();

function bucket(target: object, prop: string | symbol | undefined, create: boolean): Map<Key, unknown> | undefined {
  let byProp = store.get(target);
  if (!byProp) {
    if (!create) return undefined;
    byProp = new Map();
    store.set(target, byProp);
  }
  let m = byProp.get(prop);
  if (!m && create) {
    m = new Map();
    byProp.set(prop, m);
  }
  return m;
}

const R = Reflect as unknown as Record<string, unknown>;
if (typeof R.getMetadata !== 'function') {
  const getOwn = (key: Key, target: object, prop?: string | symbol) => bucket(target, prop, false)?.get(key);
  R.defineMetadata = (key: Key, value: unknown, target: object, prop?: string | symbol) => {
    bucket(target, prop, true)!.set(key, value);
  };
  R.getOwnMetadata = getOwn;
  R.hasOwnMetadata = (key: Key, target: object, prop?: string | symbol) => bucket(target, prop, false)?.has(key) ?? false;
  R.getMetadata = (key: Key, target: object, prop?: string | symbol) => {
    for (let t: object | null = target; t; t = Object.getPrototypeOf(t)) {
      const m = bucket(t, prop, false);
      if (m?.has(key)) return m.get(key);
    }
    return undefined;
  };
  R.metadata = (key: Key, value: unknown) => (target: object, prop?: string | symbol) => {
    bucket(target, prop, true)!.set(key, value);
  };
}
export {};
