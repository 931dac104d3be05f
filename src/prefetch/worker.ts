import { open, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { retryPolicy } from '../common/config.js';
import { describe, repoMismatchError } from '../common/errors.js';
import { elapsed, log } from '../common/log.js';
import { Deadline } from '../common/retry.js';
import { downloadVerified } from '../archive/fetch.js';
import { openRepository } from '../archive/repository.js';
import type { Storage } from '../storage/types.js';
import { checkMissIsNotAGap } from '../archive/gap-check.js';
import { nextSegment, parseWalName, segmentNumber, segmentOfLsn, timelineOfName, walObjectKey } from '../wal/names.js';
import { contextFromManifest, dropEntries, listEntries, readPrefetchState, SEGMENT, writeRecord, type PrefetchJob, type PrefetchState } from './spool-dir.js';
import { stageAgain, verifiedInSpool } from './restage.js';
import { cacheManifest, MANIFEST_KEY, readRemoteManifest } from '../archive/manifest.js';
import { repoCacheDir } from '../archive/cache-dir.js';
import { repoKeyOf } from '../storage/open.js';
import { identityAt, identityAtSync, identityOf, sameIdentity, type FileIdentity } from '../fs/file-identity.js';
import { removeAck, removeAcks, writeAck } from './fetch-ack.js';
import { watchDir } from './dir-changes.js';
import { withWorkerLock, pollUntilIdle } from '../worker/loop.js';
import { answer, type AnswerResult } from '../worker/protocol.js';

// The prefetch worker: one detached process per restore (per spool directory), started by wal-fetch.
// It keeps up to `prefetch` segments from `state.next` on downloaded and verified in the spool,
// bounded by `prefetchMaxBytes`, answers the file wal-fetch is waiting for (`state.req`), and exits
// after a few idle seconds. A segment the repository does not have ends the current run; "not found"
// is never remembered: the next request starts over, and an "absent" answer is written only for the
// request (id) that was waiting, after asking the repository for it (src/worker/protocol.ts).
// Started by the first wal-fetch of a restore (before that one loads any storage code), it may not
// know the segment size yet: it reads the repository manifest first. With the shell wrapper in use
// it also writes a fetch ack per segment (src/prefetch/fetch-ack.ts); a segment the wrapper handed
// over (hard-linked to %p: its ctime moves) counts as served: prefetching continues after it.

const CONCURRENCY = 4;
const FIRST_CONCURRENCY = 2;
const POLL_MS = 5;
const IDLE_POLL_MAX_MS = 50;
/** With change notifications on the directory, polling is only a safety net. */
const WATCHED_POLL_MS = 100;
const WATCHED_IDLE_POLL_MAX_MS = 500;
/** No new request from PostgreSQL for this long: the restore is over or paused; exit. */
const IDLE_MS = 10_000;

export async function runPrefetchWorker(job: PrefetchJob): Promise<number> {
  const { config, dir, ack } = job;
  let segSize = job.segSize;
  const policy = { ...retryPolicy(config), retries: Math.min(config.retries, 2) };
  /** Segments this worker put into the spool (and acknowledged), to notice the wrapper taking one. */
  const placed = new Map<string, FileIdentity>();
  let placedAny = false;
  /** Files this worker found missing (the end of WAL so far). */
  const wasMissing = new Set<string>();
  const restaging = new Set<string>();
  await withWorkerLock(dir, config, async () => {
    let storage: Storage | undefined;
    // Acks a killed predecessor left behind are refused by the wrapper (its pid is gone); removed.
    if (ack) removeAcks(ack);
    try {
      storage = await openRepository(config);
      if (!segSize) segSize = await learnSegmentSize(storage);
      await adoptSpool();
      await serve(storage);
    } catch (e) {
      log.warn(`prefetch worker stopped: ${describe(e)}`);
    } finally {
      storage?.close();
      // Nobody asked for anything for IDLE_MS: the restore ended or paused. Free the disk.
      if (ack) removeAcks(ack, (n) => placed.has(n));
      await dropEntries(dir, () => true).catch(() => undefined);
    }
  });
  return 0;

  /**
   * Started keyed by the data directory's pg_control (no manifest in the spool yet): the repository
   * must hold that system, whose manifest is then cached for the next wal-fetch.
   */
  async function learnSegmentSize(s: Storage): Promise<number> {
    const deadline = new Deadline(config.deadline * 1000);
    try {
      const key = repoKeyOf(config);
      const m = key ? await readRemoteManifest(s, policy, deadline) : null;
      const cache = repoCacheDir(config.spool, key ?? '');
      const ctx = m ? contextFromManifest(cache, m) : null;
      if (!m || !ctx || ctx.dir !== dir) throw repoMismatchError(`${s.url} has ${m ? `system ${m.systemIdentifier}` : 'no manifest'}, not the one of the data directory being restored`);
      await cacheManifest(join(cache, MANIFEST_KEY), m);
      return ctx.segSize;
    } finally {
      deadline.dispose();
    }
  }

  /**
   * The newest segment handed to PostgreSQL since the last look: a file this worker placed that is
   * gone or has another identity (the wrapper and wal-fetch hard-link it to %p, which moves its
   * ctime; a file changed behind walvault's back counts too, and is re-hashed when asked for).
   * Files PostgreSQL has gone past are dropped by wal-fetch and do not count.
   */
  function handedOver(state: PrefetchState | null): string | undefined {
    let newest: string | undefined;
    for (const [n, id] of placed) {
      const now = identityAtSync(join(dir, n));
      if (now && sameIdentity(now, id)) continue;
      placed.delete(n);
      if (ack) removeAck(ack, n);
      // The end of WAL is known to follow it: PostgreSQL will ask for it again.
      if (now && wasMissing.has(nextSegment(n, segSize))) void restageBefore(nextSegment(n, segSize));
      if (state?.next && n >= state.next && timelineOfName(n) === state.timeline && (!newest || n > newest)) newest = n;
    }
    return newest;
  }

  /** True while `name` is in the spool with the identity this worker recorded (not handed over). */
  async function stillPlaced(name: string): Promise<boolean> {
    const now = await identityAt(join(dir, name));
    return !!now && sameIdentity(now, placed.get(name)!);
  }

  /** Segments an earlier worker of this directory verified and left (killed, or exiting as this one started). */
  async function adoptSpool(): Promise<void> {
    for (const { name, file, identity, sha256 } of await verifiedInSpool(dir)) {
      placed.set(name, identity);
      if (ack) writeAck(ack, { name, file, identity, sha256 });
    }
  }

  /**
   * PostgreSQL found (or will find) the end of WAL at `end` and asks for the segment before it again
   * (twice, at the end of recovery): a fresh verified copy of it, with its own ack, lets the shell
   * answer those. Started as soon as that segment is handed over with `end` known missing.
   */
  async function restageBefore(end: string): Promise<void> {
    const prev = segmentNumber(end, segSize) > 0n ? nextSegment(end, segSize, -1n) : undefined;
    if (!prev || restaging.has(prev) || !ack || (placed.has(prev) && (await stillPlaced(prev)))) return;
    restaging.add(prev);
    try {
      const staged = await stageAgain(dir, prev);
      if (!staged) return;
      placed.set(prev, staged.identity);
      writeAck(ack, staged);
    } finally {
      restaging.delete(prev);
    }
  }

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
    // A request (state.json renamed into place) or the wrapper taking a segment (renamed out) wakes
    // the loop at once: polling every few milliseconds instead cost more CPU than the downloads.
    // While nothing is asked or running (a standby waiting for new WAL), poll less often.
    const changes = watchDir(dir);
    const [base, max] = changes ? [WATCHED_POLL_MS, WATCHED_IDLE_POLL_MAX_MS] : [POLL_MS, IDLE_POLL_MAX_MS];
    const pollMs = (idleFor: number) => Math.min(max, base * 2 ** Math.min(4, Math.floor(idleFor / 200)));
    /** Where prefetching continues after the wrapper served segments (reset by every new request). */
    let after: string | undefined;
    try {
      await pollUntilIdle(dir, { idleMs: IDLE_MS, pollMs, ...(changes ? { wake: changes.next } : {}) }, async () => {
        let state = await readPrefetchState(dir);
        const key = state ? `${state.next ?? ''}|${state.reqId ?? ''}` : '';
        let fresh = key !== seen;
        if (fresh) {
          seen = key;
          round++;
          missing = undefined;
          answered = false;
          after = undefined;
        }
        const taken = handedOver(state);
        if (taken && (!after || taken > after)) {
          after = taken;
          fresh = true; // PostgreSQL is being served: not idle
          await dropEntries(dir, (n) => SEGMENT.test(n) && n < taken && timelineOfName(n) === timelineOfName(taken));
        }
        if (state && after) state = { ...state, next: nextSegment(after, segSize) };
        else if (state && !state.next && job.start && state.timeline === job.start.timeline) state = { ...state, next: segmentOfLsn(job.start.lsn, job.start.timeline, segSize) };
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
    } finally {
      changes?.close();
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
    // Started for a restore's first request, until the first segment is in place, it shares the
    // store and the CPU with one other download only, not three: PostgreSQL is about to wait for it.
    const cap = job.firstRequest && !placedAny && !have.has(state.next) ? FIRST_CONCURRENCY : CONCURRENCY;
    for (let i = 0; i < config.prefetch && running.size < cap; i++, name = nextSegment(name, segSize)) {
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
    const t0 = process.hrtime.bigint();
    const marker = join(dir, `${name}.inflight`);
    const partial = join(dir, `${name}.dl`);
    const deadline = new Deadline(config.deadline * 1000);
    try {
      await (await open(marker, 'w', 0o600)).close();
      const wal = parseWalName(name);
      // The same rule as wal-fetch's own (src/archive/gap-check.ts): a miss the archive contradicts is
      // a gap. For what is likely missing (a history file, a segment this worker found missing
      // before: PostgreSQL asks again at the end of recovery) that check is read along with the
      // GET, not after it; both are the repository's answers to this very request.
      const gapCheck = () => checkMissIsNotAGap(s, wal, { policy: retryPolicy(config), deadline });
      const early = requested && (!SEGMENT.test(name) || wasMissing.has(name)) ? gapCheck() : undefined;
      early?.catch(() => undefined);
      const meta = await downloadVerified(s, walObjectKey(wal), partial, { policy, deadline, what: `prefetch ${name}` });
      if (!meta) {
        onMissing(name);
        wasMissing.add(name);
        if (requested) {
          await (early ?? gapCheck());
          await reply('absent');
          log.debug(`${name} is not in the repository (asked for; ${elapsed(t0)} with the gap check${early ? ' read alongside' : ''})`);
          if (SEGMENT.test(name)) await restageBefore(name);
        }
        return;
      }
      wasMissing.delete(name);
      // Requests moved to another timeline meanwhile: this segment will not be asked for.
      const now = await readPrefetchState(dir);
      if (SEGMENT.test(name) && now && now.timeline !== timelineOfName(name)) return;
      // The identity is taken after the last change walvault makes to the file (the rename moves
      // ctime): from then on, any change to it shows in its identity (src/fs/file-identity.ts).
      const file = join(dir, name);
      await rename(partial, file);
      const identity = identityOf(await stat(file, { bigint: true }));
      await writeRecord(dir, { v: 1, name, size: meta.size, sha256: meta.sha256, fetchedAt: new Date().toISOString(), identity });
      if (SEGMENT.test(name)) {
        placedAny = true;
        placed.set(name, identity);
        if (ack) writeAck(ack, { name, file, identity, sha256: meta.sha256 });
      }
      log.debug(`prefetched ${name} (${elapsed(t0)}${requested ? ', asked for' : ''}; worker CPU so far ${cpuSeconds()} s)`);
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

function cpuSeconds(): string {
  const u = process.cpuUsage();
  return ((u.user + u.system) / 1e6).toFixed(2);
}
