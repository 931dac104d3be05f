import type { Config } from '../common/config.js';
import { sleep } from '../common/sleep.js';
import { releaseLock, takeLock, touchLock } from './control.js';

// The skeleton both workers share: hold the lock of their directory for as long as they run, keep it
// touched (a lock untouched for LOCK_STALE_MS belongs to a dead worker), poll their state, and go
// away after a while with nothing asked and nothing to do.

/** Runs `body` holding the lock of `dir`; false (and nothing run) when another worker holds it. */
export async function withWorkerLock(dir: string, config: Config, body: () => Promise<void>): Promise<boolean> {
  if (!(await takeLock(dir, config))) return false;
  try {
    await body();
  } finally {
    await releaseLock(dir);
  }
  return true;
}

export interface Step {
  /** The work in flight (the loop waits for any of it, or for the next poll). */
  running: ReadonlyMap<string, Promise<unknown>>;
  /** How many were started by this step. */
  started: number;
  /** A new request arrived: the idle time starts over even if it needs no work. */
  fresh?: boolean;
}

/**
 * Calls `step` (read the state, start work) again and again until nothing has run, been started or
 * been asked for `idleMs`. Between steps it waits for a piece of work to end, `wake()` (a change
 * notification) or `pollMs(idle time)`.
 * `onIdle` runs at every step that found nothing to do.
 */
export async function pollUntilIdle(
  dir: string,
  opts: { idleMs: number; pollMs: (idleForMs: number) => number; onIdle?: () => Promise<void>; wake?: () => Promise<void> },
  step: () => Promise<Step>,
): Promise<void> {
  let lastTouch = 0;
  let idleSince = Date.now();
  for (;;) {
    if (Date.now() - lastTouch > 1_000) {
      lastTouch = Date.now();
      await touchLock(dir);
    }
    const { running, started, fresh } = await step();
    if (fresh) idleSince = Date.now();
    if (running.size === 0 && started === 0) {
      await opts.onIdle?.();
      if (Date.now() - idleSince > opts.idleMs) return;
      await Promise.race([sleep(opts.pollMs(Date.now() - idleSince)), ...(opts.wake ? [opts.wake()] : [])]);
    } else {
      idleSince = Date.now();
      await Promise.race([...running.values(), sleep(opts.pollMs(0)), ...(opts.wake ? [opts.wake()] : [])]);
    }
  }
}
