/**
 * Key layout. Every key is `<keyPrefix>:{<namespaced name>}:<suffix>`: the braces are a Redis Cluster
 * hash tag, so every key of one queue channel or one lock lands in one slot and multi-key scripts
 * stay legal on a cluster. Names come from core already namespaced (`app:name`, with `%` and `:`
 * escaped), so escaping `{` and `}` here keeps the tag unambiguous.
 */
export function taggedKey(keyPrefix: string, name: string, suffix: string): string {
  return `${keyPrefix}:{${name.replace(/[{}]/g, (c) => (c === '{' ? '%7B' : '%7D'))}}:${suffix}`;
}

/** Escapes the five glob metacharacters of SCAN MATCH / KEYS so a prefix matches literally. */
export function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, (c) => `\\${c}`);
}

/** The slot-determining part of a key (Redis Cluster rule: the first non-empty `{...}`). */
export function hashTag(key: string): string {
  const open = key.indexOf('{');
  if (open < 0) return key;
  const close = key.indexOf('}', open + 1);
  if (close < 0 || close === open + 1) return key;
  return key.slice(open + 1, close);
}

/**
 * `names(name)` computed once per name: key names are pure functions of a name, and building them
 * (escaping, concatenation) is on every call's path. Bounded: past `limit` names the oldest goes.
 */
export function keyNamesCache<T>(limit: number, names: (name: string) => T): (name: string) => T {
  const cache = new Map<string, T>();
  return (name) => {
    let value = cache.get(name);
    if (value === undefined) {
      value = names(name);
      if (cache.size >= limit) cache.delete(cache.keys().next().value!);
      cache.set(name, value);
    }
    return value;
  };
}
