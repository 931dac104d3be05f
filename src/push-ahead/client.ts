import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, readFile, unlink } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Config } from '../common/config.js';
import { writeJsonReplace } from '../fs/json-file.js';
import { sleep } from '../common/sleep.js';
import { readPushRecord } from './records.js';
import { configFingerprint, startWorker, workerRunning } from '../worker/control.js';

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

export const PUSHER_COMMAND = 'wal-lookahead';
export const PUSHER_JOB_ENV = 'WALVAULT_LOOKAHEAD_JOB';

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
}

export interface PusherState {
  req?: string;
  reqId?: string;
  at: number;
}

export interface PushAnswer {
  reqId: string;
  result: 'error';
  detail?: string;
}

export function pusherDir(repoCache: string, walDir: string): string {
  return join(repoCache, 'pusher', createHash('sha256').update(resolve(walDir)).digest('hex').slice(0, 12));
}

export async function readPusherState(dir: string): Promise<PusherState | null> {
  try {
    return JSON.parse(await readFile(join(dir, 'state.json'), 'utf8')) as PusherState;
  } catch {
    return null;
  }
}

async function writePusherState(dir: string, state: PusherState): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await writeJsonReplace(join(dir, 'state.json'), state);
}

export async function startPusher(job: PusherJob): Promise<void> {
  await startWorker(job.dir, PUSHER_COMMAND, PUSHER_JOB_ENV, job);
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
  const dir = pusherDir(repoCache, walDir);
  if (!workerRunning(dir, configFingerprint(config))) return 'ask-repository';
  const answerFile = join(dir, `${name}.answer`);
  await unlink(answerFile).catch(() => undefined);
  const reqId = `${process.pid}-${process.hrtime.bigint()}`;
  await writePusherState(dir, { req: name, reqId, at: Date.now() });
  const until = Date.now() + waitMs;
  for (let i = 0; Date.now() < until; i++) {
    if (await readPushRecord(repoCache, name)) return 'recorded';
    try {
      const a = JSON.parse(readFileSync(answerFile, 'utf8')) as PushAnswer;
      if (a.reqId === reqId) {
        await unlink(answerFile).catch(() => undefined);
        return 'ask-repository';
      }
    } catch {
      // no answer yet
    }
    if (i % 20 === 19 && !workerRunning(dir)) return 'ask-repository';
    await sleep(5);
  }
  return 'ask-repository';
}
