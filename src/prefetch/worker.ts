import { open, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { retryPolicy } from '../common/config.js';
import { describe } from '../common/errors.js';
import { log } from '../common/log.js';
import { Deadline } from '../common/retry.js';
import { downloadVerified } from '../archive/fetch.js';
import { openRepository } from '../archive/repository.js';
import type { Storage } from '../storage/types.js';
import { checkMissIsNotAGap } from '../archive/gap-check.js';
import { nextSegment, parseWalName, timelineOfName, walObjectKey } from '../wal/names.js';
import { dropEntries, listEntries, readPrefetchState, SEGMENT, writeRecord, type PrefetchJob, type PrefetchState } from './spool-dir.js';
import { withWorkerLock, pollUntilIdle } from '../worker/loop.js';
import { answer, type AnswerResult } from '../worker/protocol.js';

// The prefetch worker: one detached process per restore (per spool directory), started by wal-fetch.
// It keeps up to `prefetch` segments from `state.next` on downloaded and verified in the spool,
// bounded by `prefetchMaxBytes`, answers the file wal-fetch is waiting for (`state.req`), and exits
// after a few idle seconds. A segment the repository does not have ends the current run; "not found"
// is never remembered: the next request starts over, and an "absent" answer is written only for the
// request (id) that was waiting, after asking the repository for it (src/worker/protocol.ts).

const CONCURRENCY = 4;
const POLL_MS = 5;
const IDLE_POLL_MAX_MS = 50;
/** No new request from PostgreSQL for this long: the restore is over or paused; exit. */
const IDLE_MS = 10_000;

export async function runPrefetchWorker(job: PrefetchJob): Promise<number> {
  const { config, dir, segSize } = job;
  const policy = { ...retryPolicy(config), retries: Math.min(config.retries, 2) };
  await withWorkerLock(dir, config, async () => {
    let storage: Storage | undefined;
    try {
      storage = await openRepository(config);
      await serve(storage);
    } catch (e) {
      log.warn(`prefetch worker stopped: ${describe(e)}`);
    } finally {
      storage?.close();
      // Nobody asked for anything for IDLE_MS: the restore ended or paused. Free the disk.
      await dropEntries(dir, () => true).catch(() => undefined);
    }
  });
  return 0;

  async function serve(s: Storage): Promise<void> {
    const running = new Map<string, Promise<void>>();
    let seen = '';
    let answered = false;
    /** A new round starts with every new request; downloads report misses to their own round only. */
    let round = 0;
    /** First segment not found in this round: nothing at or after it until the next request. */
    let missing: string | undefined;
    const onMissing = (r: number) => (name: string) => {
      if (r === round && (missing === undefined || name < missing)) missing = name;
    };
    // While nothing is asked or running (a standby waiting for new WAL), poll less often: no busy CPU.
    const pollMs = (idleFor: number) => Math.min(IDLE_POLL_MAX_MS, POLL_MS * 2 ** Math.min(4, Math.floor(idleFor / 200)));
    await pollUntilIdle(dir, { idleMs: IDLE_MS, pollMs }, async () => {
      const state = await readPrefetchState(dir);
      const key = state ? `${state.next ?? ''}|${state.reqId ?? ''}` : '';
      const fresh = key !== seen;
      if (fresh) {
        seen = key;
        round++;
        missing = undefined;
        answered = false;
      }
      let started = 0;
      if (state) {
        // A requested file that is not a segment (a timeline history file): fetch just that one.
        if (state.req && !SEGMENT.test(state.req) && !answered && !running.has(state.req)) {
          answered = true;
          started++;
          start(s, running, state.req, state, () => undefined);
        }
        started += await schedule(s, state, running, missing, onMissing(round));
      }
      return { running, started, fresh };
    });
  }

  async function schedule(
    s: Storage,
    state: PrefetchState,
    running: Map<string, Promise<void>>,
    missing: string | undefined,
    onMissing: (name: string) => void,
  ): Promise<number> {
    if (!state.next || running.size >= CONCURRENCY) return 0;
    const present = await listEntries(dir);
    const have = new Set(present.map((e) => e.name));
    // Only what is still ahead of PostgreSQL counts against the byte bound.
    let bytes = present.filter((e) => SEGMENT.test(e.name) && e.name >= state.next!).reduce((a, e) => a + e.size, 0);
    bytes += running.size * segSize;
    let started = 0;
    let name = state.next;
    for (let i = 0; i < config.prefetch && running.size < CONCURRENCY; i++, name = nextSegment(name, segSize)) {
      if (missing !== undefined && name >= missing) break;
      if (have.has(name) || running.has(name)) continue;
      // Byte bound; one file is always allowed so that huge segments still get a look-ahead of one.
      if (bytes + segSize > config.prefetchMaxBytes && bytes > 0) break;
      bytes += segSize;
      started++;
      start(s, running, name, state, onMissing);
    }
    return started;
  }

  function start(s: Storage, running: Map<string, Promise<void>>, name: string, state: PrefetchState, onMissing: (n: string) => void): void {
    running.set(
      name,
      download(s, name, state, onMissing).finally(() => running.delete(name)),
    );
  }

  async function download(s: Storage, name: string, state: PrefetchState, onMissing: (name: string) => void): Promise<void> {
    const reqId = state.req === name ? state.reqId : undefined;
    const requested = reqId !== undefined;
    const reply = async (result: AnswerResult, detail?: string) => {
      if (requested) await answer(dir, name, reqId, result, detail);
    };
    const marker = join(dir, `${name}.inflight`);
    const partial = join(dir, `${name}.dl`);
    const deadline = new Deadline(config.deadline * 1000);
    try {
      await (await open(marker, 'w', 0o600)).close();
      const wal = parseWalName(name);
      const meta = await downloadVerified(s, walObjectKey(wal), partial, { policy, deadline, what: `prefetch ${name}` });
      if (!meta) {
        onMissing(name);
        if (requested) {
          // The same rule as wal-fetch's own (src/archive/gap-check.ts): a miss the archive contradicts is a gap.
          await checkMissIsNotAGap(s, wal, { policy: retryPolicy(config), deadline });
          await reply('absent');
        }
        return;
      }
      // Requests moved to another timeline meanwhile: this segment will not be asked for.
      const now = await readPrefetchState(dir);
      if (SEGMENT.test(name) && now && now.timeline !== timelineOfName(name)) return;
      await writeRecord(dir, { v: 1, name, size: meta.size, sha256: meta.sha256, fetchedAt: new Date().toISOString() });
      await rename(partial, join(dir, name));
    } catch (e) {
      log.warn(`prefetch of ${name} failed: ${describe(e)}`);
      onMissing(name); // do not hammer a failing store; the next request starts over
      await reply('error', describe(e)).catch(() => undefined);
    } finally {
      deadline.dispose();
      await unlink(partial).catch(() => undefined);
      await unlink(marker).catch(() => undefined);
    }
  }
}
