import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { decompressStream } from '../codec/codec.js';
import { integrityError, isWalvaultError } from '../common/errors.js';
import { Deadline, policyForBody, withRetry, type RetryPolicy } from '../common/retry.js';
import { classifyDownloadError, parseStoredMeta } from '../archive/objects.js';
import type { RepoManifest } from '../archive/manifest-parse.js';
import { HashingStream } from '../fs/hash.js';
import type { Storage } from '../storage/types.js';
import { checkSegmentMatchesName, LONG_HEADER_SIZE, parseWalHeader } from '../wal/header.js';
import type { DeepTask } from './verify-backups.js';
import type { VerifyMemory } from './verify-memory.js';

// verify --deep: every object read back through its codec and hashed against the SHA-256 and size
// its writer recorded (and what the backup that names it recorded), WAL segments' first page header
// against walvault.json and their names. Streamed, --jobs objects at once: memory stays at a few
// buffers per job whatever the objects' sizes. Objects read and found sound before (same key, size
// and ETag) are skipped unless --full.

export interface DeepCounts {
  /** Objects read in this run. */
  read: number;
  /** Objects skipped: verified by an earlier run and unchanged since. */
  remembered: number;
  /** Stored bytes read. */
  bytes: number;
}

export interface DeepOptions {
  jobs: number;
  full: boolean;
  memory: VerifyMemory;
  manifest: RepoManifest | null;
  policy: RetryPolicy;
  /** Per-object deadline (the retry deadline of one read). */
  deadlineMs: number;
}

export async function verifyDeep(storage: Storage, tasks: DeepTask[], opts: DeepOptions, problems: string[]): Promise<DeepCounts> {
  const counts: DeepCounts = { read: 0, remembered: 0, bytes: 0 };
  const todo = tasks.filter((t) => {
    if (opts.full || !opts.memory.has(t.object)) return true;
    counts.remembered++;
    return false;
  });
  let next = 0;
  const worker = async () => {
    while (next < todo.length) {
      const t = todo[next++]!;
      const problem = await verifyObject(storage, t, opts);
      counts.read++;
      counts.bytes += t.object.storedSize;
      if (problem) {
        problems.push(problem);
        opts.memory.forget(t.object);
      } else opts.memory.remember(t.object);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(opts.jobs, todo.length)) }, worker));
  return counts;
}

/** Reads one object; the problem found (one line naming it), or undefined when it is sound. */
async function verifyObject(storage: Storage, t: DeepTask, opts: DeepOptions): Promise<string | undefined> {
  const key = t.object.key;
  const deadline = new Deadline(opts.deadlineMs);
  // The damage itself, without the retry loop's "gave up after n attempts" wrapping.
  let damage: string | undefined;
  const damaged = (e: unknown): e is Error => isWalvaultError(e) && ['IntegrityError', 'CorruptObject'].includes(e.code);
  try {
    return await withRetry(`verify ${key}`, policyForBody(opts.policy, t.object.storedSize), deadline, (signal) =>
      readOnce(storage, t, opts, signal).catch((e: unknown) => {
        if (damaged(e)) damage = e.message;
        throw e;
      }),
    );
  } catch (e) {
    if (!damaged(e)) throw e;
    const line = (damage ?? e.message).replaceAll(`${storage.url}/`, '');
    return line.startsWith(key) ? line : `${key}: ${line}`;
  } finally {
    deadline.dispose();
  }
}

async function readOnce(storage: Storage, t: DeepTask, opts: DeepOptions, signal: AbortSignal): Promise<string | undefined> {
  const key = t.object.key;
  const where = `${storage.url}/${key}`;
  const got = await storage.get(key, { signal });
  if (!got) return `${key} was listed but is gone`;
  let meta;
  try {
    meta = parseStoredMeta(got.info, where);
  } catch (e) {
    got.body.destroy();
    throw e;
  }
  const hashing = new HashingStream({ limit: meta.size, what: where });
  const head: Buffer[] = [];
  let headBytes = 0;
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      if (t.segment && headBytes < LONG_HEADER_SIZE) {
        head.push(chunk.subarray(0, LONG_HEADER_SIZE - headBytes));
        headBytes += Math.min(chunk.length, LONG_HEADER_SIZE - headBytes);
      }
      cb();
    },
  });
  const decompress = decompressStream(meta.codec);
  try {
    await (pipeline as (...a: unknown[]) => Promise<void>)(...(decompress ? [got.body, decompress, hashing, sink] : [got.body, hashing, sink]), { signal });
  } catch (e) {
    throw classifyDownloadError(e, where);
  }
  const digest = hashing.digest();
  if (hashing.bytes !== meta.size || digest !== meta.sha256) {
    throw integrityError(`${key} is damaged: it reads as ${hashing.bytes} bytes with SHA-256 ${digest}, its metadata says ${meta.size} bytes with SHA-256 ${meta.sha256}`);
  }
  if (t.expect && (t.expect.sha256 !== digest || (t.expect.size !== undefined && t.expect.size !== hashing.bytes))) {
    return `${key} is not what ${t.expect.by} recorded: ${hashing.bytes} bytes with SHA-256 ${digest}, expected ${t.expect.size ?? '?'} bytes with SHA-256 ${t.expect.sha256}`;
  }
  return t.segment ? checkSegment(Buffer.concat(head), t.segment, hashing.bytes, key, opts.manifest) : undefined;
}

function checkSegment(head: Buffer, segment: string, size: number, key: string, manifest: RepoManifest | null): string | undefined {
  try {
    const h = parseWalHeader(head, key);
    if (manifest && h.systemIdentifier !== manifest.systemIdentifier) {
      return `${key} belongs to database system ${h.systemIdentifier}, the repository to ${manifest.systemIdentifier}`;
    }
    if (manifest && h.segmentSize !== manifest.walSegmentSize) {
      return `${key} has ${h.segmentSize}-byte segments, the repository ${manifest.walSegmentSize}-byte ones`;
    }
    checkSegmentMatchesName(h, segment, size, key);
    return undefined;
  } catch (e) {
    if (isWalvaultError(e)) return e.message;
    throw e;
  }
}
