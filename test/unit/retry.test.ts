import { describe, expect, it } from 'vitest';
import { accessDeniedError, integrityError, unavailableError } from '../../src/common/errors.js';
import { Deadline, policyForBody, withRetry, type RetryPolicy } from '../../src/common/retry.js';

const fast: RetryPolicy = { retries: 5, minDelayMs: 1, maxDelayMs: 5, attemptTimeoutMs: 1000, deadlineMs: 5000 };

describe('withRetry', () => {
  it('retries transient errors and returns the first success', async () => {
    let calls = 0;
    const d = new Deadline(fast.deadlineMs);
    const v = await withRetry('op', fast, d, async () => {
      if (++calls < 3) throw unavailableError('503 SlowDown');
      return 'ok';
    });
    expect(v).toBe('ok');
    expect(calls).toBe(3);
    d.dispose();
  });

  it('does not retry non-retryable errors and keeps their class', async () => {
    let calls = 0;
    const d = new Deadline(fast.deadlineMs);
    await expect(
      withRetry('op', fast, d, async () => {
        calls++;
        throw accessDeniedError('403');
      }),
    ).rejects.toMatchObject({ code: 'AccessDenied' });
    expect(calls).toBe(1);
    d.dispose();
  });

  it('gives up after the retry budget with a StorageUnavailable naming the last error', async () => {
    let calls = 0;
    const d = new Deadline(fast.deadlineMs);
    await expect(
      withRetry('op', fast, d, async () => {
        calls++;
        throw unavailableError('connection reset');
      }),
    ).rejects.toThrow(/gave up after 6 attempts.*connection reset/);
    expect(calls).toBe(6);
    d.dispose();
  });

  it('aborts a stalled attempt with the per-attempt timeout and retries it', async () => {
    let calls = 0;
    const d = new Deadline(5000);
    const v = await withRetry('op', { ...fast, attemptTimeoutMs: 50 }, d, (signal) => {
      calls++;
      if (calls === 1) {
        return new Promise((_, reject) => signal.addEventListener('abort', () => reject(new Error('aborted'))));
      }
      return Promise.resolve('second');
    });
    expect(v).toBe('second');
    expect(calls).toBe(2);
    d.dispose();
  });

  it('stops at the overall deadline even with retries left', async () => {
    const d = new Deadline(150);
    const started = Date.now();
    await expect(
      withRetry('op', { ...fast, retries: 1000, attemptTimeoutMs: 10_000 }, d, (signal) => {
        return new Promise((_, reject) => signal.addEventListener('abort', () => reject(unavailableError('stalled'))));
      }),
    ).rejects.toMatchObject({ code: 'StorageUnavailable' });
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('retries integrity errors only twice', async () => {
    let calls = 0;
    const d = new Deadline(fast.deadlineMs);
    await expect(
      withRetry('op', fast, d, async () => {
        calls++;
        throw integrityError('sha mismatch');
      }),
    ).rejects.toMatchObject({ code: 'IntegrityError' });
    expect(calls).toBe(3);
    d.dispose();
  });
});

describe('policyForBody', () => {
  it('trust: large segments are pushed in bounded memory: the attempt timeout scales with the body, per started 64 MiB', () => {
    const MiB = 1024 * 1024;
    expect(policyForBody(fast, 16 * MiB).attemptTimeoutMs).toBe(1000);
    expect(policyForBody(fast, 64 * MiB).attemptTimeoutMs).toBe(1000);
    expect(policyForBody(fast, 64 * MiB + 1).attemptTimeoutMs).toBe(2000);
    expect(policyForBody(fast, 1024 * MiB).attemptTimeoutMs).toBe(16_000);
    expect(policyForBody(fast, 1024 * MiB).deadlineMs).toBe(fast.deadlineMs);
  });
});
