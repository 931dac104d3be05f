import { join } from 'node:path';
import { retryPolicy } from '../common/config.js';
import { describe } from '../common/errors.js';
import { log } from '../common/log.js';
import { pidAlive } from '../common/pid.js';
import { Deadline, withRetry } from '../common/retry.js';
import { openRepository } from '../archive/repository.js';
import type { Storage } from '../storage/types.js';
import { advanceHighWater } from '../archive/high-water.js';
import { flushGapMarkers } from '../archive/backlog.js';
import { parseWalName, walObjectKey } from '../wal/names.js';
import { parseStoredMeta } from '../archive/objects.js';
import { ByteBudget } from '../archive/byte-budget.js';
import { archiveOrder, contiguousEnd, listReady } from './plan.js';
import { prepareAndPush } from '../archive/push.js';
import { LOOKAHEAD_MEMORY, lookaheadPolicy, recordUpload } from './batch.js';
import { listPushRecords, pruneRecords } from './records.js';
import { pruneWrapperAcks } from './wrapper-acks.js';
import type { PusherJob } from './client.js';
import { pollUntilIdle, withWorkerLock, type Step } from '../worker/loop.js';
import { answer, readState } from '../worker/protocol.js';

// The look-ahead worker (see client.ts): uploads the ready files of one pg_wal directory that have
// no record yet, oldest first (history files first), with bounded memory and concurrency, records
// each success, advances the high-water mark over the unbroken run it extends, and exits after a few
// idle seconds. It never renames PostgreSQL's .ready files and never answers for PostgreSQL: each
// file's own wal-push still verifies the local bytes against the record before exiting 0.

const MAX_INFLIGHT = 4;
const POLL_MS = 20;
const IDLE_MS = 10_000;

export async function runPusher(job: PusherJob): Promise<number> {
  const { config, dir, walDir, repoCache, repoUrl } = job;
  const policy = retryPolicy(config);
  const retryLess = lookaheadPolicy(config);
  const budget = new ByteBudget(LOOKAHEAD_MEMORY);
  const running = new Map<string, Promise<void>>();
  const failed = new Set<string>();
  const uploaded = new Set<string>();
  let base = job.base;
  let baseMarked = false;
  let pendingAdvance = false;
  let segSize: number | undefined;
  const skip = new Set(job.skip ?? []);
  let seenReq = '';
  let request: { name: string; reqId: string } | undefined;
  let storage!: Promise<Storage>;

  await withWorkerLock(dir, config, async () => {
    storage = openRepository(config);
    storage.catch(() => undefined);
    try {
      await pollUntilIdle(dir, { idleMs: IDLE_MS, pollMs: () => POLL_MS, onIdle: advanceLeftToUs }, step);
      const s = await storage;
      const deadline = new Deadline(config.deadline * 1000);
      try {
        // Remote mark writes are rate-limited: leave none pending behind a worker that is going away.
        await advance(s, deadline, true);
        await flushGapMarkers(s, { spool: config.spool, policy, deadline });
      } finally {
        deadline.dispose();
      }
    } catch (e) {
      log.warn(`look-ahead worker stopped: ${describe(e)}`);
    } finally {
      await Promise.allSettled([...running.values()]);
      const ready = new Set(await listReady(walDir).catch(() => [] as string[]));
      await pruneRecords(repoCache, ready, uploaded).catch(() => undefined);
      if (job.wrapper) await pruneWrapperAcks(job.wrapper, ready, uploaded).catch(() => undefined);
      await storage.then((s) => s.close()).catch(() => undefined);
    }
  });
  return 0;

  async function step(): Promise<Step> {
    const state = await readState(dir);
    if (state?.reqId && state.req && state.reqId !== seenReq) {
      seenReq = state.reqId;
      request = { name: state.req, reqId: state.reqId };
      failed.delete(state.req); // asked for: try again, whatever happened before
      uploaded.delete(state.req);
    }
    const ready = (await listReady(walDir)).sort(archiveOrder);
    const recorded = new Set(await listPushRecords(repoCache));
    // A waiting wal-push's file first, then PostgreSQL's order.
    const queue = request ? [request.name, ...ready.filter((n) => n !== request!.name)] : ready;
    let started = 0;
    for (const name of queue) {
      if (running.size >= MAX_INFLIGHT) break;
      if (recorded.has(name) || running.has(name) || failed.has(name) || uploaded.has(name)) continue;
      if (request?.name !== name) {
        if (skip.has(name)) continue;
        // Like the look-ahead: segments older than the one PostgreSQL asked for are its business.
        if (job.base && !name.endsWith('.history') && name <= job.base.last) continue;
      }
      try {
        parseWalName(name);
      } catch {
        continue;
      }
      started++;
      running.set(name, upload(name).finally(() => running.delete(name)));
    }
    return { running, started };
  }

  /** The starting wal-push has exited with mark advances left to us: make them now. */
  async function advanceLeftToUs(): Promise<void> {
    if (!pendingAdvance || parentAlive()) return;
    const deadline = new Deadline(config.deadline * 1000);
    await advance(await storage, deadline).finally(() => deadline.dispose());
  }

  async function upload(name: string): Promise<void> {
    const deadline = new Deadline(config.deadline * 1000);
    try {
      const path = join(walDir, name);
      const done = await prepareAndPush(storage, path, name, config, deadline, budget, retryLess);
      await recordUpload(repoCache, repoUrl, done.file, job.wrapper ? { acks: job.wrapper, config } : undefined);
      uploaded.add(name);
      if (done.file.header) segSize = done.file.header.segmentSize;
      await advance(await storage, deadline);
    } catch (e) {
      failed.add(name);
      log.warn(`look-ahead upload of ${name} failed (its own wal-push will retry): ${describe(e)}`);
      // Tells the waiting wal-push to push it itself.
      if (request?.name === name) await answer(dir, name, request.reqId, 'error', describe(e)).catch(() => undefined);
    } finally {
      deadline.dispose();
    }
  }

  /** Moves the high-water mark over the unbroken run of archived segments after `base`. */
  async function advance(s: Storage, deadline: Deadline, force = false): Promise<void> {
    if (!base || !segSize) return;
    // The starting wal-push writes the mark for its own batch: two writers could move it backwards.
    if (parentAlive()) {
      pendingAdvance = true;
      return;
    }
    pendingAdvance = false;
    const archived = new Set([...uploaded, ...(await listPushRecords(repoCache))]);
    const end = contiguousEnd(base.last, archived, segSize);
    if (end === base.last && !(force && baseMarked)) return;
    // The base is the parent's own file, and the parent may have failed to push it: a mark from it
    // would claim a segment the archive does not hold. Only the archive itself can vouch for it.
    if (!baseMarked && !archived.has(base.last) && !(await inArchive(s, base.last, deadline))) return;
    const ctx = { spool: config.spool, policy, deadline, intervalMs: config.highWaterInterval * 1000, force };
    // The base first, so that a timeline's very first mark starts there (as wal-push does).
    if (!baseMarked) await advanceHighWater(s, base.timeline, base.last, ctx);
    baseMarked = true;
    base = { ...base, last: end };
    await advanceHighWater(s, base.timeline, end, ctx);
  }

  async function inArchive(s: Storage, name: string, deadline: Deadline): Promise<boolean> {
    const key = walObjectKey(parseWalName(name));
    try {
      const info = await withRetry(`check ${key}`, retryLess, deadline, (signal) => s.head(key, { signal }));
      if (info === null) return false;
      // Something at the key is not enough: only an object walvault stored (its metadata) counts.
      parseStoredMeta(info, `${s.url}/${key}`);
      return true;
    } catch (e) {
      log.debug(`cannot confirm that ${name} is archived, the high-water mark stays where it is: ${describe(e)}`);
      return false;
    }
  }

  function parentAlive(): boolean {
    return job.parentPid ? pidAlive(job.parentPid) : false;
  }
}
