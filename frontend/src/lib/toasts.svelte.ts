// Short confirmations and background errors, shown in a polite live region.

export interface Toast {
  id: number;
  kind: 'info' | 'error';
  text: string;
}

class Toasts {
  items = $state<Toast[]>([]);
  private next = 1;

  show(text: string, kind: Toast['kind'] = 'info', ms = 5000): void {
    const id = this.next++;
    this.items.push({ id, kind, text });
    setTimeout(() => this.dismiss(id), ms);
  }

  error(text: string): void {
    this.show(text, 'error', 8000);
  }

  dismiss(id: number): void {
    this.items = this.items.filter((t) => t.id !== id);
  }
}

export const toasts = new Toasts();
