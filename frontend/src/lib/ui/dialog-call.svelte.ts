import type { Capsule } from '../types';

/**
 * The one call a dialog makes (confirm, create, launch…) and its state:
 * `busy` while it runs (the dialog then blocks Escape and Close), `error`
 * for <ErrorNote> when it failed (the dialog stays open). On success the
 * dialog closes.
 */
export class DialogCall {
  busy = $state(false);
  error = $state<unknown>(null);

  /**
   * Runs `call` unless one already runs: busy (and onbusy(true)) while it
   * runs, then onclose() on success or the error kept. Resolves to whether
   * it succeeded.
   */
  async run(call: () => Promise<unknown>, onclose: () => void, onbusy?: (busy: boolean) => void): Promise<boolean> {
    if (this.busy) return false;
    this.busy = true;
    this.error = null;
    onbusy?.(true);
    try {
      await call();
      this.busy = false;
      onclose();
      return true;
    } catch (e) {
      this.error = e;
      return false;
    } finally {
      this.busy = false;
      onbusy?.(false);
    }
  }
}

/** Props of the dialogs that act on one capsule (pause, snapshot, destroy). */
export interface CapsuleDialogProps<T> {
  open: boolean;
  capsule: Capsule | null;
  onclose: () => void;
  /** What the call gave: the capsule as it now is, or the new snapshot. */
  ondone?: (result: T) => void;
  /** True while the call runs, false after. */
  onbusy?: (busy: boolean) => void;
}
