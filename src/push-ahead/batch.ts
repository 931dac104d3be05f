import { join, resolve } from 'node:path';
import { retryPolicy, type Config } from '../common/config.js';
import { describe } from '../common/errors.js';
import { log } from '../common/log.js';
import type { Deadline, RetryPolicy } from '../common/retry.js';
import { ByteBudget } from '../archive/byte-budget.js';
import type { PreparedWal } from '../archive/local-wal.js';
import { prepareAndPush, type PushedFile } from '../archive/push.js';
import type { Storage } from '../storage/types.js';
import type { WalName } from '../wal/names.js';
import { startWorker } from '../worker/control.js';
import { pusherDir, type PusherJob } from './client.js';
import { listReady, pickLookahead } from './plan.js';
import { listPushRecords, writePushRecord } from './records.js';
import { localObjectPath } from './fast-path.js';
import { writePushAck } from './wrapper-acks.js';
import type { WrapperAcks } from '../worker/wrapper-acks.js';
import { maskUserInfo } from '../common/redact.js';

// What a look-ahead batch (wal-push's own, or the worker's) adds to pushing one file: the other ready
// files taken along, a memory budget shared by the files in flight, a record of each upload for the
// file's own wal-push, and a worker for the backlog beyond the batch.

/**
 * Bytes of memory the uploads of one process may hold at once (see ByteBudget); one file always fits.
 * A compressed 16 MiB segment counts 4 MiB while it is prepared, then its body's size; an uncompressed
 * one its size; a larger (streamed) one STREAMED_MEMORY. 8 MiB: two segments prepared while two
 * bodies upload, enough to keep two cores busy; more only raised the peak (README "Memory").
 */
export const LOOKAHEAD_MEMORY = 8 * 1024 * 1024;

/** A look-ahead file that fails is simply pushed by its own wal-push later: it is not retried long. */
export function lookaheadPolicy(config: Config): RetryPolicy {
  const policy = retryPolicy(config);
  return { ...policy, retries: Math.min(policy.retries, 1) };
}

/**
 * Records a look-ahead upload in the spool so that the file's own wal-push can skip the network, and
 * with `wrapper`, acknowledges it to the shell fast path so that it need not even start Node.
 */
export async function recordUpload(repoCache: string, repoUrl: string, file: PreparedWal, wrapper?: { acks: WrapperAcks; config: Config }): Promise<void> {
  if (wrapper) {
    const { acks, config } = wrapper;
    await writePushAck(acks, { name: file.wal.name, sha256: file.sha256, ...(file.identity ? { identity: file.identity } : {}) }, {
      repo: maskUserInfo(repoUrl),
      object: localObjectPath(config.repo, file.wal),
      logLevel: config.logLevel,
    });
  }
  await writePushRecord(repoCache, {
    v: 1,
    name: file.wal.name,
    size: file.size,
    sha256: file.sha256,
    ...file.stat,
    ...(file.identity ? { identity: file.identity } : {}),
    repo: repoUrl,
    pushedAt: new Date().toISOString(),
  }).catch((e) => log.debug(`cannot record the look-ahead upload of ${file.wal.name}: ${describe(e)}`));
}

export interface BatchPlan {
  /** PostgreSQL's ready files when the batch was planned (empty without look-ahead). */
  ready: string[];
  /** The files this wal-push uploads besides its own, in PostgreSQL's order. */
  extra: WalName[];
}

/**
 * Picks up to `lookahead` other ready files PostgreSQL will ask for next (minus those recorded), and
 * when more are waiting starts the look-ahead worker on the rest, which keeps uploading while
 * PostgreSQL works through the ones recorded here (the fast path).
 */
export async function planBatch(config: Config, wal: WalName, walDir: string, repoCache: string, repoUrl: string, wrapper?: WrapperAcks): Promise<BatchPlan> {
  if (config.lookahead <= 0) return { ready: [], extra: [] };
  const ready = await listReady(walDir);
  const recorded = ready.length > 0 ? new Set(await listPushRecords(repoCache)) : new Set<string>();
  const extra = pickLookahead(ready, wal, config.lookahead, recorded);
  const taken = new Set([wal.name, ...extra.map((w) => w.name)]);
  if (pickLookahead(ready, wal, 1, new Set([...taken, ...recorded])).length > 0) {
    await startWorker('lookahead', {
      config,
      dir: pusherDir(repoCache, walDir),
      walDir: resolve(walDir),
      repoCache,
      repoUrl,
      skip: [...taken],
      parentPid: process.pid,
      ...(wrapper ? { wrapper } : {}),
      ...(wal.kind === 'segment' ? { base: { timeline: wal.timeline, last: wal.name } } : {}),
    } satisfies PusherJob);
  }
  return { ready, extra };
}

export interface BatchResult {
  foreground: PushedFile;
  /** Look-ahead files uploaded and recorded, and those that failed (their own wal-push retries). */
  archived: Set<string>;
  failed: string[];
}

/**
 * Pushes PostgreSQL's file and the planned look-ahead files within one memory budget. The foreground
 * file reserves its memory first; a look-ahead failure is logged, a foreground failure is thrown.
 */
export async function pushBatch(
  storage: Promise<Storage>,
  config: Config,
  path: string,
  plan: BatchPlan,
  ctx: { name: string; walDir: string; repoCache: string; repoUrl: string; deadline: Deadline; wrapper?: WrapperAcks | undefined },
): Promise<BatchResult> {
  const policy = retryPolicy(config);
  const budget = new ByteBudget(LOOKAHEAD_MEMORY);
  // Started first, so first for a preparation slot and for memory.
  const foreground = prepareAndPush(storage, path, ctx.name, config, ctx.deadline, budget, policy);
  const others = plan.extra.map((w) =>
    prepareAndPush(storage, join(ctx.walDir, w.name), w.name, config, ctx.deadline, budget, lookaheadPolicy(config)).then(async (done) => {
      await recordUpload(ctx.repoCache, ctx.repoUrl, done.file, ctx.wrapper ? { acks: ctx.wrapper, config } : undefined);
      return done;
    }),
  );
  const [fg, ...la] = await Promise.allSettled([foreground, ...others]);
  // A repository that could not be opened is the cause of every failure above: report it first.
  await storage;
  const archived = new Set<string>();
  const failed: string[] = [];
  la.forEach((r, i) => {
    const name = plan.extra[i]!.name;
    if (r.status === 'fulfilled') archived.add(name);
    else {
      failed.push(name);
      log.warn(`look-ahead upload of ${name} failed (its own wal-push will retry): ${describe(r.reason)}`);
    }
  });
  if (fg!.status === 'rejected') throw fg!.reason;
  return { foreground: fg!.value, archived, failed };
}
