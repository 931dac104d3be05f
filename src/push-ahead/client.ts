import { join, resolve } from 'node:path';
import type { Config } from '../common/config.js';
import { readPushRecord } from './records.js';
import { configFingerprint } from '../worker/control.js';
import { ask } from '../worker/protocol.js';
import { shortHash } from '../fs/short-hash.js';
import type { WrapperAcks } from '../worker/wrapper-acks.js';

// The look-ahead worker's client side. wal-push uploads up to `lookahead` other ready files itself;
// when more are waiting it starts one detached worker per pg_wal directory and repository, which
// keeps uploading the ready files (in PostgreSQL's order) and recording them, so that PostgreSQL's
// calls for them take the fast path while the uploads go on. A wal-push whose file has no record yet
// asks that worker (which has the storage client loaded) instead of loading it itself, and exits 0
// only after re-hashing its file against the record the worker wrote, like any fast path.
//
//   <repo cache>/pusher/<pg_wal hash>/state.json       the request of a waiting wal-push
//   <repo cache>/pusher/<pg_wal hash>/<name>.answer    the worker could not upload it (for that request)
//   <repo cache>/pusher/<pg_wal hash>/worker.lock|config|log
// (src/worker/protocol.ts and control.ts)

export interface PusherJob {
  config: Config;
  dir: string;
  walDir: string;
  repoCache: string;
  repoUrl: string;
  /** The segment PostgreSQL asked for when the worker was started: the high-water mark may be
   * advanced from it over the worker's contiguous uploads (and the look-ahead ones recorded). */
  base?: { timeline: number; last: string };
  /** Files the starting wal-push uploads itself (unless a later wal-push asks for one of them). */
  skip?: string[];
  /** The starting wal-push: the worker leaves the high-water mark to it until it has exited. */
  parentPid?: number;
  /** The shell fast path's context, when the starting wal-push was run by the wrapper. */
  wrapper?: WrapperAcks;
}

export function pusherDir(repoCache: string, walDir: string): string {
  return join(repoCache, 'pusher', shortHash(resolve(walDir), 12));
}

/**
 * Asks the running look-ahead worker (same configuration) to upload `name` and waits until it has
 * recorded it: 'recorded' (the caller still verifies its file against the record), or
 * 'ask-repository' (no worker, it failed, or no answer in time: push it yourself).
 */
export async function askPusher(
  config: Config,
  repoCache: string,
  walDir: string,
  name: string,
  waitMs: number,
): Promise<'recorded' | 'ask-repository'> {
  const answer = await ask(pusherDir(repoCache, walDir), name, {
    fingerprint: configFingerprint(config),
    waitMs,
    done: async () => (await readPushRecord(repoCache, name)) !== null,
  });
  // The worker's only answer is 'error' (it could not upload it).
  return answer === 'done' ? 'recorded' : 'ask-repository';
}
