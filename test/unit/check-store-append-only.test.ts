// check's write-read-delete probe with credentials that may not delete: fine (ok, said so) for a
// pusher's configuration, a failure for one that sets a retention rule (it runs walvault delete).
// A file:// store whose delete answers AccessDenied stands in for the bucket policy; the real
// radosgw policy is exercised by test/integration/append-only.test.ts.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accessDeniedError, unavailableError } from '../../src/common/errors.js';
import { Deadline } from '../../src/common/retry.js';
import { CHECK_PREFIX, probeWriteReadDelete, type StoreCtx } from '../../src/operate/check-store.js';
import { createFileStorage } from '../../src/storage/file/driver.js';
import type { Storage } from '../../src/storage/types.js';

const POLICY = { retries: 0, minDelayMs: 1, maxDelayMs: 1, attemptTimeoutMs: 5_000, deadlineMs: 10_000 };

describe('check write-read-delete with credentials that may not delete', () => {
  let root = '';
  let storage: Storage;
  const deadlines: Deadline[] = [];
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'wv-check-ao-'));
    storage = createFileStorage(root);
  });
  afterAll(async () => {
    for (const d of deadlines) d.dispose();
    storage.close();
    await rm(root, { recursive: true, force: true });
  });

  /** The store, with every delete answered by `refusal`, and the keys whose deletion was asked for. */
  function refusing(refusal: () => Error): { ctx: StoreCtx; asked: string[] } {
    const asked: string[] = [];
    const s = Object.create(storage) as Storage;
    s.delete = async (keys) => {
      asked.push(...keys);
      throw refusal();
    };
    const deadline = new Deadline(10_000);
    deadlines.push(deadline);
    return { ctx: { storage: s, policy: POLICY, deadline }, asked };
  }
  const probeObjects = async () => {
    const keys: string[] = [];
    for await (const o of storage.list(CHECK_PREFIX)) keys.push(o.key);
    return keys;
  };

  it('without a retention rule: ok, naming the refusal, the roles and the object left behind; no second delete attempt', async () => {
    const before = await probeObjects();
    const { ctx, asked } = refusing(() => accessDeniedError('S3 DeleteObjects s3://b/p/state/check/x failed: HTTP 403 AccessDenied'));
    const p = await probeWriteReadDelete(ctx);
    expect(p.status).toBe('ok');
    expect(p.detail).toMatch(/^put and get work \(\d+ bytes and metadata equal\), delete is refused \(S3 DeleteObjects .* 403 AccessDenied\); the probe object state\/check\/rw-\S+ stays: append-only credentials, enough for wal-push, backup-push, wal-fetch and backup-fetch; only walvault delete needs s3:DeleteObject$/);
    expect(asked).toHaveLength(1);
    const after = await probeObjects();
    expect(after.filter((k) => !before.includes(k))).toEqual([asked[0]]);
  });

  it('with a retention rule: FAIL, the fix names s3:DeleteObject and the retention rule', async () => {
    const { ctx } = refusing(() => accessDeniedError('S3 DeleteObjects failed: HTTP 403 AccessDenied'));
    const p = await probeWriteReadDelete(ctx, { deleteRequired: true });
    expect(p.status).toBe('fail');
    expect(p.detail).toMatch(/delete is refused/);
    expect(p.fix).toMatch(/retention rule \(retainFull\/retainDays\), so it is for walvault delete, which needs s3:DeleteObject/);
  });

  it('a delete failing for another reason still fails the probe', async () => {
    const { ctx } = refusing(() => unavailableError('S3 DeleteObjects failed: HTTP 503 ServiceUnavailable', { retryable: false }));
    const p = await probeWriteReadDelete(ctx);
    expect(p.status).toBe('fail');
    expect(p.detail).toMatch(/^delete of state\/check\/rw-\S+ failed: .*503/);
  });

  it('a store that deletes: ok, delete and gone, nothing left', async () => {
    const before = await probeObjects();
    const deadline = new Deadline(10_000);
    deadlines.push(deadline);
    const p = await probeWriteReadDelete({ storage, policy: POLICY, deadline }, { deleteRequired: true });
    expect(p.status).toBe('ok');
    expect(p.detail).toMatch(/delete and gone/);
    expect(await probeObjects()).toEqual(before);
  });
});
