import type { Logger } from '@cluster/core';

const SECRET_IN_URL = /([a-z][a-z0-9+.-]*:\/\/)[^@/\s]*@/gi;

/** Removes `user:password@` from any URL inside `text`. */
export function redact(text: string): string {
  return text.replace(SECRET_IN_URL, '$1***@');
}

/**
 * A console logger in the pino shape @cluster expects. Warnings and errors are printed as one
 * line each (the adapters already strip credentials; URLs are redacted again here anyway).
 */
export function consoleLogger(bindings: Record<string, unknown> = {}, verbose = false): Logger {
  const write = (level: string) => (obj: object, msg?: string) => {
    // The demo reports a failed start itself, as one line; core's own record of it would be a second.
    if (msg?.startsWith('app start failed')) return;
    const where = typeof bindings.instance === 'string' ? `[${bindings.instance}] ` : '';
    const err = (obj as { err?: { message?: string; code?: string } }).err;
    const detail = err ? `: ${err.code ? `${err.code} ` : ''}${err.message ?? ''}` : '';
    console.error(redact(`${where}${level}: ${msg ?? ''}${detail}`));
  };
  const noop = () => {};
  return {
    debug: noop,
    info: verbose ? write('info') : noop,
    warn: write('warn'),
    error: write('error'),
    child: (more) => consoleLogger({ ...bindings, ...more }, verbose),
  };
}
