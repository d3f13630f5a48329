/** Exit codes and error codes of design.md §4; one error type for everything a user can fix. */
export const EXIT = {
  OK: 0,
  FAILED: 1,
  USAGE: 2,
  VALIDATION: 3,
  NOT_FOUND: 4,
  CONFLICT: 5,
  HOST: 6,
  INTEGRITY: 7,
} as const;

export type ErrorCode = Exclude<keyof typeof EXIT, 'OK'>;

export interface ImgctlErrorOptions {
  hint?: string;
  cause?: unknown;
  /** extra lines shown under the message, e.g. every validation problem */
  details?: string[];
}

export class ImgctlError extends Error {
  readonly code: ErrorCode;
  readonly hint?: string;
  readonly details: string[];

  constructor(code: ErrorCode, message: string, options: ImgctlErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ImgctlError';
    this.code = code;
    this.hint = options.hint;
    this.details = options.details ?? [];
  }

  get exitCode(): number {
    return EXIT[this.code];
  }
}

export function isImgctlError(error: unknown): error is ImgctlError {
  return error instanceof ImgctlError;
}

/** How a failed system call or connection is named in a message: its code (EIO), else its message. */
export function errorCode(error: unknown): string {
  return (error as NodeJS.ErrnoException)?.code ?? (error as Error)?.message ?? String(error);
}
