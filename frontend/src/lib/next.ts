// Where to go after signing in: the ?next= of the sign-in page, if it names
// a page of this app.

/**
 * Returns next as a path (with its query) on origin, or fallback when next
 * is missing or leads anywhere else. A plain "starts with one slash" test
 * is not enough: the URL parser reads "/\evil.example" and "/<tab>/evil.example"
 * as "//evil.example", another origin.
 */
export function safeNext(next: string | null, origin: string, fallback = '/capsules'): string {
  if (!next || !next.startsWith('/')) return fallback;
  let u: URL;
  try {
    u = new URL(next, origin);
  } catch {
    return fallback;
  }
  if (u.origin !== new URL(origin).origin) return fallback;
  return u.pathname + u.search + u.hash;
}
