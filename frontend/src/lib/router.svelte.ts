// A small path router over the History API: the dashboard's URLs are real
// paths (/capsules/<id>) that wrenn-cp answers with index.html.

class Router {
  path = $state(location.pathname);
  search = $state(location.search);

  constructor() {
    window.addEventListener('popstate', () => this.sync());
  }

  private sync(): void {
    this.path = location.pathname;
    this.search = location.search;
  }

  /** Goes to a path inside the app; replace keeps the history entry. */
  navigate(to: string, opts: { replace?: boolean } = {}): void {
    if (to === location.pathname + location.search) return;
    if (opts.replace) history.replaceState(null, '', to);
    else history.pushState(null, '', to);
    this.sync();
    window.scrollTo(0, 0);
  }

  /** Query parameters of the current URL. */
  get params(): URLSearchParams {
    return new URLSearchParams(this.search);
  }

  /** Rewrites the query string without a new history entry. */
  setParams(params: Record<string, string | undefined>): void {
    const q = new URLSearchParams(location.search);
    for (const [k, v] of Object.entries(params)) {
      if (v) q.set(k, v);
      else q.delete(k);
    }
    const s = q.toString();
    history.replaceState(null, '', location.pathname + (s ? '?' + s : ''));
    this.sync();
  }
}

export const router = new Router();

/**
 * Click handler for the whole app: same-origin <a href> clicks without
 * modifier keys navigate in place instead of reloading the page.
 */
export function interceptLinks(e: MouseEvent): void {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const a = (e.target as Element | null)?.closest('a');
  if (!a || a.target || a.hasAttribute('download') || a.origin !== location.origin) return;
  if (a.pathname.startsWith('/v1/')) return;
  e.preventDefault();
  router.navigate(a.pathname + a.search);
}
