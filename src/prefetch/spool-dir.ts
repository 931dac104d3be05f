import { readFileSync } from 'node:fs';
import { readdir, readFile, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../common/config.js';
import { writeJsonReplace } from '../fs/json-file.js';
import { log } from '../common/log.js';
import { startWorker } from '../worker/control.js';
import { readState, writeState, type WorkerState } from '../worker/protocol.js';
import { repoCacheDir } from '../archive/cache-dir.js';
import { repoKeyOf } from '../storage/open.js';
import { timelineOfName } from '../wal/names.js';
import { shortHash } from '../fs/short-hash.js';
import { parseIdentity, type FileIdentity } from '../fs/file-identity.js';
import { dataDirSystemIdentifier } from './data-dir.js';
import type { AckTarget } from './fetch-ack.js';

// The prefetch spool of one restore: `<spool>/repos/<repo>/prefetch/<system id>-<data dir hash>/`.
// Keyed by repository, by the repository's PostgreSQL system identifier and by the data directory
// being restored (restore_command runs in it), so two restores on one machine never share files.
//
//   <name>           a WAL file downloaded and verified by the worker (temp + fsync + rename)
//   <name>.json      its record: size and SHA-256 of the original bytes (from the object metadata),
//                    and the file's identity taken after it was verified, fsynced and renamed
//   <name>.inflight  the worker is downloading it right now
//   <name>.answer    the worker's answer to one request (req id inside): absent from the repository, or failed
//   state.json       PostgreSQL's latest request and where prefetching continues (src/worker/protocol.ts)
//   worker.lock      pid of the running worker, touched while it runs
//   worker.log       the worker's log
//
// wal-fetch serves a file from here only after re-hashing it against its record. Files are matched
// by exact WAL file name, which includes the timeline, so a segment of one timeline is never handed
// over for another. "Not found" is never kept: an answer is for exactly one request (its id), and is
// only written after the worker asked the repository for that request (see prefetch/worker.ts).

export interface PrefetchRecord {
  v: 1;
  name: string;
  size: number;
  sha256: string;
  fetchedAt: string;
  /** stat() of the file once verified, fsynced and in place: what lets a hand-over skip re-hashing. */
  identity?: FileIdentity;
}

/** The worker's state (src/worker/protocol.ts) with the request wal-fetch is waiting for, if any. */
export interface PrefetchState extends WorkerState {
  /** Timeline of the latest segment request. */
  timeline: number;
  /** First segment to prefetch (the one after the last served, or the one requested). */
  next?: string;
}

export interface PrefetchContext {
  dir: string;
  /** 0 when not known yet (keyed from the data directory): the worker reads it from the repository. */
  segSize: number;
}

export interface PrefetchJob extends PrefetchContext {
  config: Config;
  /** Where the worker acknowledges verified segments for the shell wrapper (src/prefetch/fetch-ack.ts). */
  ack?: AckTarget;
  /** Where replay starts when the segment size was not known to the caller (pg_control's redo). */
  start?: { timeline: number; lsn: string };
  /** Started by the first request of a restore (src/prefetch/fast-path.ts withStartHint). */
  firstRequest?: boolean;
}

export const SEGMENT = /^[0-9A-F]{24}$/;
const ENTRY = /^(?:[0-9A-F]{24}|[0-9A-F]{8}\.history)$/;

export function prefetchDir(repoCache: string, systemIdentifier: string, dataDir: string): string {
  const d = shortHash(dataDir, 12);
  return join(repoCache, 'prefetch', `${systemIdentifier}-${d}`);
}

export async function readPrefetchState(dir: string): Promise<PrefetchState | null> {
  return readState<PrefetchState>(dir, (s) => typeof s.timeline === 'number' && (s.next === undefined || SEGMENT.test(s.next)));
}

/** WAL files (complete, renamed into place) in the spool, with their sizes. */
export async function listEntries(dir: string): Promise<Array<{ name: string; size: number }>> {
  const names = await readdir(dir).catch(() => [] as string[]);
  const out: Array<{ name: string; size: number }> = [];
  for (const n of names) {
    if (!ENTRY.test(n)) continue;
    const s = await stat(join(dir, n)).catch(() => null);
    if (s) out.push({ name: n, size: s.size });
  }
  return out;
}

/** Deletes prefetched files (file, record, answers) whose WAL file name `drop(name)` accepts. */
export async function dropEntries(dir: string, drop: (name: string) => boolean): Promise<void> {
  const names = await readdir(dir).catch(() => [] as string[]);
  for (const f of names) {
    const base = /^(?:[0-9A-F]{24}|[0-9A-F]{8}\.history)(?=$|\.)/.exec(f)?.[0];
    if (!base || !drop(base)) continue;
    await unlink(join(dir, f)).catch(() => undefined);
  }
}

export async function writeRecord(dir: string, rec: PrefetchRecord): Promise<void> {
  await writeJsonReplace(join(dir, `${rec.name}.json`), rec);
}

export function readRecord(dir: string, name: string): PrefetchRecord | null {
  try {
    const r = JSON.parse(readFileSync(join(dir, `${name}.json`), 'utf8')) as PrefetchRecord;
    if (r.v === 1 && r.name === name && Number.isSafeInteger(r.size) && /^[0-9a-f]{64}$/.test(r.sha256)) {
      const identity = parseIdentity(r.identity);
      const { identity: _, ...rest } = r;
      return identity ? { ...rest, identity } : rest;
    }
  } catch {
    // absent or torn
  }
  return null;
}

/**
 * This restore's spool directory from the locally cached repository manifest (written by wal-push
 * and by the first wal-fetch that had to read it), or null when there is none yet.
 */
export async function prefetchContextFromCache(config: Config): Promise<PrefetchContext | null> {
  const key = repoKeyOf(config);
  if (!key) return null;
  const cache = repoCacheDir(config.spool, key);
  try {
    return contextFromManifest(cache, JSON.parse(await readFile(join(cache, 'walvault.json'), 'utf8')));
  } catch {
    return null;
  }
}

/**
 * This restore's spool directory keyed by the system identifier in the data directory's pg_control,
 * for the first wal-fetch of a restore when the spool has no copy of the repository manifest: the
 * worker then reads the manifest itself and refuses to work for a directory whose key differs from
 * the repository's system identifier. The segment size is learnt by the worker (segSize 0).
 */
export function bootContext(config: Config): PrefetchContext | null {
  const key = repoKeyOf(config);
  const sysid = key ? dataDirSystemIdentifier(process.cwd()) : null;
  if (!key || !sysid) return null;
  return { dir: prefetchDir(repoCacheDir(config.spool, key), sysid, process.cwd()), segSize: 0 };
}

export function contextFromManifest(cache: string, m: { systemIdentifier?: unknown; walSegmentSize?: unknown }): PrefetchContext | null {
  if (typeof m.systemIdentifier !== 'string' || !/^\d+$/.test(m.systemIdentifier) || typeof m.walSegmentSize !== 'number') return null;
  return { dir: prefetchDir(cache, m.systemIdentifier, process.cwd()), segSize: m.walSegmentSize };
}

/**
 * PostgreSQL asked for a newer timeline's history file (it looks for one at the start of recovery
 * and whenever it runs out of WAL): segments of older timelines are of no further use, and the
 * worker stops prefetching them until PostgreSQL asks for a segment again.
 */
export async function noteHistoryRequest(ctx: PrefetchContext, timeline: number): Promise<void> {
  try {
    const prev = await readPrefetchState(ctx.dir);
    if (prev && timeline > prev.timeline) {
      await writeState<PrefetchState>(ctx.dir, { timeline, at: Date.now() });
      await dropEntries(ctx.dir, (n) => timelineOfName(n) < timeline);
    }
  } catch (e) {
    log.debug(`prefetch bookkeeping failed: ${String(e)}`);
  }
}

/**
 * After segment `name` was handed to PostgreSQL: prefetch continues after it; segments of other
 * timelines and those PostgreSQL has gone past are dropped. `name` itself stays until a later one is
 * served: PostgreSQL asks for the last segment again at the end of recovery.
 */
export async function afterSegmentServed(ctx: PrefetchContext, name: string, next: string, job: PrefetchJob): Promise<void> {
  try {
    const tli = timelineOfName(name);
    await writeState<PrefetchState>(ctx.dir, { timeline: tli, next, at: Date.now() });
    await dropEntries(ctx.dir, (n) => timelineOfName(n) !== tli || n < name);
    await startWorker('prefetch', job);
  } catch (e) {
    log.debug(`prefetch bookkeeping failed: ${String(e)}`);
  }
}
