// Resuming needs no confirmation: it is run at once from the detail page's
// button or the list's row menu. Both share this, so both show the same
// progress (the ids being resumed) and the same words on failure.

import { api, ApiError } from '../api';
import { shortId } from '../format';
import { toasts } from '../toasts.svelte';
import type { Capsule } from '../types';

class Resuming {
  ids = $state<string[]>([]);

  has(id: string): boolean {
    return this.ids.includes(id);
  }

  /** Resumes the capsule; the resumed capsule, or undefined on failure (toasted). */
  async run(c: Capsule): Promise<Capsule | undefined> {
    if (this.has(c.id)) return undefined;
    this.ids.push(c.id);
    try {
      const r = await api.resumeCapsule(c.id);
      toasts.show(`Capsule ${shortId(c.id)} resumed`);
      return r;
    } catch (e) {
      const msg = e instanceof ApiError ? e.message : String(e);
      toasts.error(`Could not resume capsule ${shortId(c.id)}: ${msg}`);
      return undefined;
    } finally {
      this.ids = this.ids.filter((x) => x !== c.id);
    }
  }
}

export const resuming = new Resuming();
