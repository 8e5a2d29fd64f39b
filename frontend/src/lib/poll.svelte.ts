// Polling that keeps a view live: it runs fn now and then every `ms` while
// the tab is visible, never overlaps two runs, and stops when the component
// that started it goes away (call it inside $effect or onMount and return
// the stop function).

export function poll(fn: (signal: AbortSignal) => Promise<unknown> | unknown, ms: () => number): () => void {
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running = false;
  let ctrl = new AbortController();

  const tick = async () => {
    if (stopped) return;
    clearTimeout(timer);
    if (document.visibilityState === 'visible' && !running) {
      running = true;
      try {
        await fn(ctrl.signal);
      } catch (e) {
        if (!(e instanceof DOMException && e.name === 'AbortError')) console.warn('poll failed', e);
      } finally {
        running = false;
      }
    }
    if (!stopped) timer = setTimeout(tick, ms());
  };
  const onVisible = () => {
    if (document.visibilityState === 'visible') void tick();
  };
  document.addEventListener('visibilitychange', onVisible);
  void tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
    ctrl.abort();
    ctrl = new AbortController();
    document.removeEventListener('visibilitychange', onVisible);
  };
}
