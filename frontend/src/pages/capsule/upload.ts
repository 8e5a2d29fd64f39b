// Uploads a file's raw bytes to a capsule (PUT /v1/capsules/{id}/files?path=)
// with upload progress, which fetch cannot report. Same cookie session and
// CSRF header as the API client; failures become the client's ApiError with
// the server's own words.

import { api, ApiError } from '../../lib/api';

function csrf(): string | undefined {
  for (const part of document.cookie.split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === 'wrenn_csrf') return decodeURIComponent(v.join('='));
  }
  return undefined;
}

export interface Upload {
  done: Promise<void>;
  abort: () => void;
}

export function uploadWithProgress(
  capsuleId: string,
  path: string,
  file: Blob,
  onprogress: (sent: number, total: number) => void,
): Upload {
  const xhr = new XMLHttpRequest();
  const done = new Promise<void>((resolve, reject) => {
    xhr.open('PUT', api.fileURL(capsuleId, path));
    xhr.withCredentials = true;
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    const token = csrf();
    if (token) xhr.setRequestHeader('X-CSRF-Token', token);
    xhr.upload.onprogress = (e) => onprogress(e.loaded, e.lengthComputable ? e.total : file.size);
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve();
        return;
      }
      let code = 'http_' + xhr.status;
      let message = `${xhr.status} ${xhr.statusText}`.trim();
      try {
        const body = JSON.parse(xhr.responseText);
        if (body?.error?.message) {
          code = body.error.code ?? code;
          message = body.error.message;
        }
      } catch {
        // Not JSON: keep the status line.
      }
      reject(new ApiError(xhr.status, code, message));
    };
    xhr.onerror = () =>
      reject(new ApiError(0, 'network', 'Cannot reach the Wrenn control plane. Check your connection and try again.'));
    xhr.onabort = () => reject(new DOMException('Upload cancelled', 'AbortError'));
    xhr.send(file);
  });
  return { done, abort: () => xhr.abort() };
}
