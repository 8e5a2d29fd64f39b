// Formatting of sizes, times and durations for display.

export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 10 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

export function mib(n: number): string {
  return n >= 1024 && n % 1024 === 0 ? `${n / 1024} GiB` : `${n} MiB`;
}

const rtf = new Intl.RelativeTimeFormat('en', { numeric: 'auto' });

/** "3 minutes ago", "in 2 hours"; "—" for no time. */
export function relative(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return '—';
  const s = Math.round((new Date(iso).getTime() - now) / 1000);
  const a = Math.abs(s);
  if (a < 5) return 'just now';
  if (a < 60) return rtf.format(s, 'second');
  if (a < 3600) return rtf.format(Math.round(s / 60), 'minute');
  if (a < 86400) return rtf.format(Math.round(s / 3600), 'hour');
  return rtf.format(Math.round(s / 86400), 'day');
}

/** A full local date and time, for titles and detail pages. */
export function datetime(iso: string | null | undefined): string {
  if (!iso) return '—';
  return new Date(iso).toLocaleString(undefined, {
    year: 'numeric',
    month: 'short',
    day: 'numeric',
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
  });
}

/** "30 s", "5 min", "2 h", "never" for 0. */
export function seconds(n: number): string {
  if (!n) return 'never';
  if (n < 60) return `${n} s`;
  if (n < 3600) return `${Math.round(n / 60)} min`;
  return `${+(n / 3600).toFixed(1)} h`;
}

/** The first 8 characters of an id, for tables. */
export function shortId(id: string): string {
  return id.slice(0, 8);
}

/**
 * The share of a capsule's own CPU allowance in use. envd measures CPU as a
 * percentage of every CPU the capsule's kernel sees (cpu_count, the host's
 * CPUs under gVisor), while the capsule may use only `vcpus` of them: convert
 * to cores in use and divide by the allowance, 0–100.
 */
export function cpuOfAllowance(usedPct: number, cpuCount: number, vcpus: number): number {
  if (!Number.isFinite(usedPct) || usedPct <= 0) return 0;
  const seen = cpuCount > 0 ? cpuCount : 1;
  const allowed = vcpus > 0 ? Math.min(vcpus, seen) : seen;
  return Math.min(100, (usedPct * seen) / allowed);
}

/** A one-line summary of an egress policy: what a capsule may reach. */
export function networkSummary(p: { internet: boolean; allow: string[]; deny: string[] } | null | undefined): string {
  if (!p) return 'internet';
  const allow = p.allow?.length ?? 0;
  const deny = p.deny?.length ?? 0;
  if (allow === 0 && !p.internet) return 'no internet';
  let s = allow > 0 ? `only ${allow} allowed` : 'internet';
  if (deny > 0) s += `, ${deny} denied`;
  return s;
}

/** What networkSummary means, in a sentence. */
export function networkTitle(p: { internet: boolean; allow: string[]; deny: string[] } | null | undefined): string {
  if (!p || (p.internet && !p.allow?.length && !p.deny?.length)) return 'The capsule reaches the whole internet (never the host, other capsules or private ranges).';
  if (!p.allow?.length && !p.internet) return 'The capsule reaches nothing outside; DNS answers no name.';
  if (p.allow?.length) return 'Default-deny: only the allowed destinations, minus the denied ones, are reachable.';
  return 'The internet, except the denied destinations.';
}
