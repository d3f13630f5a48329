/**
 * When a request to a registry (or its token service) is tried again, and after how long:
 * 429, 5xx and broken connections, a few times, with the server's Retry-After or doubling
 * waits. A certificate problem or an abort is not retried: another attempt gives the same.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { ImgctlError } from '../util/errors.ts';

/** tries after the first */
export const RETRIES = 3;
const BACKOFF_MS = 500;
const MAX_RETRY_AFTER_S = 30;
/** errors of the certificate check: another attempt gives the same answer */
export const TLS_ERROR = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS|ERR_SSL/;

export function isRetryableStatus(status: number): boolean {
  return status === 429 || status >= 500;
}

/** A connection failure another attempt may fix (not an abort, not a certificate problem). */
export function isRetryableError(error: unknown, signal: AbortSignal | undefined): boolean {
  if (signal?.aborted || error instanceof ImgctlError) return false;
  const code = (error as NodeJS.ErrnoException)?.code ?? '';
  return !TLS_ERROR.test(code);
}

/** The wait before retry `attempt` (0-based): the server's Retry-After, else doubling. */
export function retryDelay(attempt: number, retryAfter: string | undefined): number {
  const seconds = Number(retryAfter);
  if (retryAfter !== undefined && Number.isFinite(seconds) && seconds >= 0)
    return Math.min(seconds, MAX_RETRY_AFTER_S) * 1000;
  return BACKOFF_MS * 2 ** attempt;
}

/** Logs `retrying WHAT: WHY, in N s` and waits that long (an abort cuts it short). */
export async function waitToRetry(
  wait: number,
  line: string,
  log: ((line: string) => void) | undefined,
  signal: AbortSignal | undefined,
): Promise<void> {
  log?.(`retrying ${line}, in ${wait / 1000} s`);
  await sleep(wait, undefined, { signal });
}
