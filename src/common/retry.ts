import pRetry from 'p-retry';
import { describe, isWalvaultError, rewordError, unavailableError, WalvaultError } from './errors.js';
import { log } from './log.js';

// The one retry/timeout policy behind every storage call: exponential backoff with jitter, a
// per-attempt timeout that aborts the request (and a stalled body read) through an AbortSignal, and
// a total deadline shared by all calls of one command. Uploads that hang forever were the most
// common complaint about the other tools; here nothing waits longer than the deadline.
export interface RetryPolicy {
  /** Retries after the first attempt. */
  retries: number;
  minDelayMs: number;
  maxDelayMs: number;
  /** One attempt (request + body transfer) is aborted after this long. */
  attemptTimeoutMs: number;
  /** The whole command gives up after this long. */
  deadlineMs: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  retries: 8,
  minDelayMs: 200,
  maxDelayMs: 5_000,
  attemptTimeoutMs: 60_000,
  deadlineMs: 120_000,
};

/**
 * Body bytes one `attemptTimeout` covers. A PUT of a larger body (a 1 GiB WAL segment) gets one more
 * `attemptTimeout` per started 64 MiB, so the timeout bounds throughput (64 MiB per 60 s by default,
 * ~1 MiB/s), not the object's size; `idleTimeout` still ends a stalled transfer, and `deadline` the
 * whole command.
 */
export const ATTEMPT_TIMEOUT_BYTES = 64 * 1024 * 1024;

export function policyForBody(policy: RetryPolicy, bytes: number): RetryPolicy {
  const units = Math.max(1, Math.ceil(bytes / ATTEMPT_TIMEOUT_BYTES));
  return units === 1 ? policy : { ...policy, attemptTimeoutMs: policy.attemptTimeoutMs * units };
}

/** Integrity failures are retried only a couple of times: a corrupt object stays corrupt. */
const MAX_INTEGRITY_RETRIES = 2;

export class Deadline {
  private readonly controller = new AbortController();
  private readonly timer: NodeJS.Timeout;
  readonly at: number;

  constructor(readonly ms: number) {
    this.at = Date.now() + ms;
    this.timer = setTimeout(() => this.controller.abort(new Error(`deadline of ${ms / 1000}s exceeded`)), ms);
    this.timer.unref();
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get expired(): boolean {
    return this.controller.signal.aborted;
  }

  remainingMs(): number {
    return Math.max(0, this.at - Date.now());
  }

  dispose(): void {
    clearTimeout(this.timer);
  }
}

export async function withRetry<T>(
  what: string,
  policy: RetryPolicy,
  deadline: Deadline,
  fn: (signal: AbortSignal, attempt: number) => Promise<T>,
): Promise<T> {
  let lastError: WalvaultError | undefined;
  let integrityFailures = 0;
  let attempts = 0;
  const started = Date.now();

  const attempt = async (attemptNumber: number): Promise<T> => {
    attempts = attemptNumber;
    if (deadline.expired) throw gaveUp();
    // AbortSignal.timeout() throws ERR_OUT_OF_RANGE on a fractional delay (a Deadline built from an
    // hrtime difference has one): whole milliseconds only.
    const timeout = AbortSignal.timeout(Math.ceil(Math.min(policy.attemptTimeoutMs, Math.max(1, deadline.remainingMs()))));
    const signal = AbortSignal.any([deadline.signal, timeout]);
    try {
      return await fn(signal, attemptNumber);
    } catch (e) {
      if (timeout.aborted && !deadline.expired) {
        throw unavailableError(`${what}: attempt timed out after ${(policy.attemptTimeoutMs / 1000).toFixed(1)}s`, { cause: e });
      }
      throw e;
    }
  };

  const gaveUp = (): WalvaultError => {
    const summary = `${what}: gave up after ${attempts} attempt${attempts === 1 ? '' : 's'} in ${((Date.now() - started) / 1000).toFixed(1)}s`;
    if (!lastError) {
      // Earlier steps of the command used up the whole deadline: say so instead of "0 attempts".
      if (attempts === 0 || deadline.expired) {
        return unavailableError(`${summary}: the command's deadline of ${deadline.ms / 1000}s ran out (raise deadline if this store is slow)`);
      }
      return unavailableError(summary);
    }
    // A non-transient error keeps its own message; a transient one says how long we tried. Either way
    // the class (and so the exit code) of the last failure is kept, e.g. IntegrityError stays 10.
    if (!lastError.retryable) return lastError;
    return rewordError(lastError, `${summary}: ${lastError.message}`, { cause: lastError, retryable: true });
  };

  try {
    return await pRetry(attempt, {
      retries: policy.retries,
      minTimeout: policy.minDelayMs,
      maxTimeout: policy.maxDelayMs,
      factor: 2,
      randomize: true,
      maxRetryTime: policy.deadlineMs,
      signal: deadline.signal,
      shouldRetry: ({ error }) => {
        if (!isWalvaultError(error) || !error.retryable || deadline.expired) return false;
        if (error.code === 'IntegrityError' && ++integrityFailures > MAX_INTEGRITY_RETRIES) return false;
        return true;
      },
      onFailedAttempt: ({ error, attemptNumber, retriesLeft, retryDelay }) => {
        if (isWalvaultError(error)) lastError = error;
        // (Runs before shouldRetry: an integrity failure past the limit gets no "retrying" line.)
        const lastIntegrity = isWalvaultError(error) && error.code === 'IntegrityError' && integrityFailures >= MAX_INTEGRITY_RETRIES;
        if (isWalvaultError(error) && error.retryable && retriesLeft > 0 && !deadline.expired && !lastIntegrity) {
          log.warn(`${what}: attempt ${attemptNumber} failed (${describe(error)}); retrying in ${retryDelay} ms`);
        }
      },
    });
  } catch (e) {
    if (deadline.expired) throw gaveUp();
    if (isWalvaultError(e) && e.retryable) {
      lastError = e;
      throw gaveUp();
    }
    throw e;
  }
}
