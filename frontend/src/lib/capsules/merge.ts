// Updates an object in place from a newer copy of it (a polled capsule), so
// that Svelte's fine-grained reactivity touches only what changed and keyed
// rows, open menus and focus stay where they are.

export function mergeInto<T extends object>(target: T, src: T): T {
  const t = target as Record<string, unknown>;
  const s = src as Record<string, unknown>;
  for (const k of Object.keys(t)) if (!(k in s)) delete t[k];
  for (const [k, v] of Object.entries(s)) {
    if ((k === 'metadata' || k === 'network') && JSON.stringify(t[k]) === JSON.stringify(v)) continue;
    if (t[k] !== v) t[k] = v;
  }
  return target;
}

/**
 * The new list, reusing the objects of the old one that have the same id
 * (updated in place), in the new list's order.
 */
export function mergeList<T extends { id: string }>(old: T[], fresh: T[]): T[] {
  const byId = new Map(old.map((o) => [o.id, o]));
  return fresh.map((f) => {
    const o = byId.get(f.id);
    return o ? mergeInto(o, f) : f;
  });
}
