// The `object-lock` line of walvault check: does the bucket have S3 Object Lock, and does that agree
// with s3ObjectLockMode/Days? Lock settings on a bucket without it make every PutObject fail (the
// store refuses a retention it cannot keep), so that is a FAIL found here rather than by wal-push.
import type { Config } from '../common/config.js';
import { describe } from '../common/errors.js';
import { withRetry } from '../common/retry.js';
import type { Probe } from './check-report.js';
import type { StoreCtx } from './check-store.js';

const name = 'object-lock';

export async function probeObjectLock(ctx: StoreCtx, config: Pick<Config, 's3ObjectLockMode' | 's3ObjectLockDays'>): Promise<Probe> {
  let enabled: boolean;
  try {
    enabled = await withRetry('check: ask whether the bucket has S3 Object Lock', ctx.policy, ctx.deadline, (signal) => ctx.storage.objectLockEnabled({ signal }));
  } catch (e) {
    return { name, status: 'fail', detail: `GetObjectLockConfiguration failed: ${describe(e)}`, fix: 'grant s3:GetBucketObjectLockConfiguration on the bucket (delete needs it too)' };
  }
  const mode = config.s3ObjectLockMode;
  const days = config.s3ObjectLockDays;
  const settings = mode && days ? `${mode} retention for ${days} day${days === 1 ? '' : 's'}` : undefined;
  if (settings && enabled) {
    return { name, status: 'ok', detail: `the bucket has Object Lock enabled; every object walvault writes gets ${settings} from the moment it is written` };
  }
  if (settings) {
    return {
      name,
      status: 'fail',
      detail: `s3ObjectLockMode/s3ObjectLockDays ask for ${settings}, but the bucket has no Object Lock: the store refuses every write that carries a retention`,
      fix: 'use a bucket created with Object Lock enabled (create-bucket --object-lock-enabled-for-bucket; on AWS it can also be enabled on a versioned bucket), or unset s3ObjectLockMode and s3ObjectLockDays',
    };
  }
  if (enabled) {
    return {
      name,
      status: 'warn',
      detail: 'the bucket has Object Lock enabled, but s3ObjectLockMode/s3ObjectLockDays are not set: objects get only the bucket\'s default retention, if it has one; delete skips locked objects',
      fix: 'set s3ObjectLockMode and s3ObjectLockDays to lock every object walvault writes (or rely on a default retention rule of the bucket)',
    };
  }
  return { name, status: 'ok', detail: 'the bucket has no Object Lock and no retention is set: objects can be deleted and overwritten by anyone with the rights to (see README "Immutability")' };
}
