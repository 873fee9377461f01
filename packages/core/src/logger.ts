/** The structural subset of pino's API that we call. pino, bunyan-style wrappers or console adapters fit. */
export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  child(bindings: Record<string, unknown>): Logger;
}

const noop = (): void => {};

export const noopLogger: Logger = {
  debug: noop,
  info: noop,
  warn: noop,
  error: noop,
  child: () => noopLogger,
};

/** Turns an unknown thrown value into a loggable object without leaking anything but message and code. */
export function errorFields(error: unknown): Record<string, unknown> {
  if (error instanceof Error) {
    const out: Record<string, unknown> = { err: { name: error.name, message: error.message } };
    const code = (error as { code?: unknown }).code;
    if (code !== undefined) (out.err as Record<string, unknown>).code = code;
    return out;
  }
  return { err: { message: String(error) } };
}
