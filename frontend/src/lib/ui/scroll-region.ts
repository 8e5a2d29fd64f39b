/**
 * A box that scrolls sideways (a `.table-wrap` on a narrow screen) must be
 * reachable by keyboard, or its hidden columns are out of reach for anyone
 * without a mouse or touch screen (WCAG 2.1.1). While its content is wider
 * than it, it takes focus (arrow keys then scroll it) and is a region named
 * label; when everything fits it is a plain box, not an extra Tab stop.
 *
 *   <div class="table-wrap" use:scrollRegion={'API keys'}>
 */
export function scrollRegion(el: HTMLElement, label: string) {
  let name = label;
  const update = () => {
    if (el.scrollWidth > el.clientWidth + 1) {
      el.tabIndex = 0;
      el.setAttribute('role', 'region');
      el.setAttribute('aria-label', name);
    } else if (el.hasAttribute('tabindex')) {
      if (document.activeElement === el) el.blur();
      el.removeAttribute('tabindex');
      el.removeAttribute('role');
      el.removeAttribute('aria-label');
    }
  };
  // The box's own size (the window) and its content's (rows come and go).
  const ro = new ResizeObserver(update);
  ro.observe(el);
  const watchContent = () => {
    for (const c of el.children) ro.observe(c);
  };
  watchContent();
  const mo = new MutationObserver(() => {
    watchContent();
    update();
  });
  mo.observe(el, { childList: true });
  update();
  return {
    update(label: string) {
      name = label;
      update();
    },
    destroy() {
      ro.disconnect();
      mo.disconnect();
    },
  };
}
