// Append-only credentials on radosgw: the start script creates a second user, `pusher`, that owns
// nothing; a bucket policy of the bucket's owner grants it what wal-push, backup-push, wal-fetch and
// backup-fetch need and denies every delete. The same policy is the README's radosgw example
// ("Append-only credentials").
import { PutBucketPolicyCommand } from '@aws-sdk/client-s3';
import { createTestBucket, s3ClientFor, type TestStore } from './stores.js';

/** What the pusher may do: read, write, list, and clean up its own unfinished multipart uploads. */
export const PUSHER_ACTIONS = [
  's3:GetObject',
  's3:PutObject',
  's3:ListBucket',
  's3:ListBucketMultipartUploads',
  's3:AbortMultipartUpload',
  's3:GetBucketObjectLockConfiguration',
];
export const DENIED_ACTIONS = ['s3:DeleteObject', 's3:DeleteObjectVersion'];

/**
 * The bucket policy. The owner's statement is needed on radosgw: an object belongs to the user who
 * wrote it and its ACL grants nobody else, so without it the owner (the pruner) could not read what
 * the pusher archived. The explicit Deny wins over any Allow, in a policy or an ACL.
 */
export function appendOnlyPolicy(bucket: string, pusherUser: string, ownerUser: string, actions = PUSHER_ACTIONS): Record<string, unknown> {
  const resources = [`arn:aws:s3:::${bucket}`, `arn:aws:s3:::${bucket}/*`];
  return {
    Version: '2012-10-17',
    Statement: [
      { Sid: 'Pusher', Effect: 'Allow', Principal: { AWS: [`arn:aws:iam:::user/${pusherUser}`] }, Action: actions, Resource: resources },
      { Sid: 'PusherNeverDeletes', Effect: 'Deny', Principal: { AWS: [`arn:aws:iam:::user/${pusherUser}`] }, Action: DENIED_ACTIONS, Resource: [`arn:aws:s3:::${bucket}/*`] },
      { Sid: 'Pruner', Effect: 'Allow', Principal: { AWS: [`arn:aws:iam:::user/${ownerUser}`] }, Action: ['s3:*'], Resource: resources },
    ],
  };
}

/** The store as the pusher sees it: same endpoint, the pusher's keys (for envFor, writeRepoConfig, s3ClientFor). */
export function asPusher(store: TestStore): TestStore {
  if (!store.pusher) throw new Error(`${store.name} has no pusher user: only rgw-start.sh creates one`);
  return { ...store, accessKeyId: store.pusher.accessKeyId, secretAccessKey: store.pusher.secretAccessKey };
}

/** A new bucket of the owner with the append-only policy for the pusher (`opts.without`: PUSHER_ACTIONS left out). */
export async function createAppendOnlyBucket(store: TestStore, hint: string, opts: { without?: string[] } = {}): Promise<string> {
  if (!store.pusher || !store.user) throw new Error(`${store.name} has no pusher user: only rgw-start.sh creates one`);
  const bucket = await createTestBucket(store, hint);
  const actions = PUSHER_ACTIONS.filter((a) => !opts.without?.includes(a));
  const policy = appendOnlyPolicy(bucket, store.pusher.user, store.user, actions);
  await s3ClientFor(store).send(new PutBucketPolicyCommand({ Bucket: bucket, Policy: JSON.stringify(policy) }));
  return bucket;
}
