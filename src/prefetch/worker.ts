import { open, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { retryPolicy } from '../common/config.js';
import { describe } from '../common/errors.js';
import { log } from '../common/log.js';
import { Deadline } from '../common/retry.js';
import { sleep } from '../common/sleep.js';
import { downloadVerified } from '../archive/fetch.js';
import { openRepository } from '../archive/repository.js';
import type { Storage } from '../storage/types.js';
import { checkMissIsNotAGap } from '../archive/gap-check.js';
import { nextSegment, parseWalName, timelineOfName, walObjectKey } from '../wal/names.js';
import { dropEntries, listEntries, readState, SEGMENT, writeRecord, type MissAnswer, type PrefetchJob, type PrefetchState } from './spool-dir.js';
import { releaseLock, takeLock, touchLock } from '../worker/control.js';

// The prefetch worker: one detached process per restore (per spool directory), started by wal-fetch.
// It keeps up to `prefetch` segments from `state.next` on downloaded and verified in the spool,
// bounded by `prefetchMaxBytes`, answers the file wal-fetch is waiting for (`state.req`), and exits
// after a few idle seconds. A segment the repository does not have ends the current run; "not found"
// is never remembered: the next request starts over, and a `.miss` answer is written only for the
// request (id) that was waiting, after asking the repository for it.

const CONCURRENCY = 4;
const POLL_MS = 5;
/** While nothing is asked or running (a standby waiting for new WAL), poll less often: no busy CPU. */
const IDLE_POLL_MAX_MS = 50;
/** No new request from PostgreSQL for this long: the restore is over or paused; exit. */
const IDLE_MS = 10_000;

export async function runPrefetchWorker(job: PrefetchJob): Promise<number> {
  const { config, dir, segSize } = job;
  if (!(await takeLock(dir, config))) return 0;
  const policy = { ...retryPolicy(config), retries: Math.min(config.retries, 2) };
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
    await releaseLock(dir);
  }
  return 0;

  async function serve(s: Storage): Promise<void> {
    const running = new Map<string, Promise<void>>();
    let seen = '';
    let idleSince = Date.now();
    let lastTouch = 0;
    let answered = false;
    /** A new round starts with every new request; downloads report misses to their own round only. */
    let round = 0;
    /** First segment not found in this round: nothing at or after it until the next request. */
    let missing: string | undefined;
    const onMissing = (r: number) => (name: string) => {
      if (r === round && (missing === undefined || name < missing)) missing = name;
    };
    for (;;) {
      if (Date.now() - lastTouch > 1_000) {
        lastTouch = Date.now();
        await touchLock(dir);
      }
      const state = await readState(dir);
      const key = state ? `${state.next ?? ''}|${state.reqId ?? ''}` : '';
      if (key !== seen) {
        seen = key;
        round++;
        missing = undefined;
        answered = false;
        idleSince = Date.now();
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
      if (running.size === 0 && started === 0) {
        if (Date.now() - idleSince > IDLE_MS) return;
        await sleep(Math.min(IDLE_POLL_MAX_MS, POLL_MS * 2 ** Math.min(4, Math.floor((Date.now() - idleSince) / 200))));
      } else {
        idleSince = Date.now();
        await Promise.race([...running.values(), sleep(POLL_MS)]);
      }
    }
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
    const requested = state.req === name && state.reqId !== undefined;
    const answer = async (a: Omit<MissAnswer, 'reqId'>) => {
      if (requested) await writeFile(join(dir, `${name}.miss`), JSON.stringify({ ...a, reqId: state.reqId }), { mode: 0o600 });
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
          await answer({ result: 'absent' });
        }
        return;
      }
      // Requests moved to another timeline meanwhile: this segment will not be asked for.
      const now = await readState(dir);
      if (SEGMENT.test(name) && now && now.timeline !== timelineOfName(name)) return;
      await writeRecord(dir, { v: 1, name, size: meta.size, sha256: meta.sha256, fetchedAt: new Date().toISOString() });
      await rename(partial, join(dir, name));
    } catch (e) {
      log.warn(`prefetch of ${name} failed: ${describe(e)}`);
      onMissing(name); // do not hammer a failing store; the next request starts over
      await answer({ result: 'error', detail: describe(e) }).catch(() => undefined);
    } finally {
      deadline.dispose();
      await unlink(partial).catch(() => undefined);
      await unlink(marker).catch(() => undefined);
    }
  }
}
