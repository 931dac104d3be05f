import { readFile, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { compressBuffer } from '../codec/codec.js';
import { retryPolicy, type Config } from '../common/config.js';
import { conflictError, fromFsError, localFileError } from '../common/errors.js';
import { sha256Hex } from '../common/hash.js';
import { elapsed, formatBytes, log } from '../common/log.js';
import { Deadline, withRetry } from '../common/retry.js';
import { ensureManifest } from '../repo/manifest.js';
import { objectMeta, parseStoredMeta, type StoredMeta } from '../repo/objects.js';
import { openStorage, storageUrlOf } from '../storage/open.js';
import type { Storage } from '../storage/types.js';
import { checkSegmentMatchesName, parseWalHeader } from '../wal/header.js';
import { advanceHighWater } from '../wal/high-water.js';
import { dropIfOverLimit, flushGapMarkers } from '../wal/ready-queue.js';
import { parseWalName, walObjectKey, type WalName } from '../wal/names.js';

// archive_command = 'walvault wal-push %p %f'. Exit 0 if and only if the file is durably in the
// repository with the same bytes; a false 0 makes PostgreSQL recycle WAL that exists nowhere else.

export interface LocalWalFile {
  wal: WalName;
  path: string;
  data: Buffer;
  sha256: string;
  header?: ReturnType<typeof parseWalHeader>;
}

/** Reads and checks a WAL file PostgreSQL handed us. Name validation happens before any I/O. */
export async function readLocalWal(path: string, name: string): Promise<LocalWalFile> {
  const wal = parseWalName(name);
  const what = `${path} (${wal.name})`;
  let data: Buffer;
  try {
    const s = await stat(path);
    if (s.isDirectory()) throw localFileError(`${what} is a directory, not a WAL file`);
    if (!s.isFile()) throw localFileError(`${what} is not a regular file`);
    data = await readFile(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw localFileError(`${what} does not exist`);
    throw fromFsError(e, what, 'read');
  }
  const file: LocalWalFile = { wal, path, data, sha256: sha256Hex(data) };
  if (wal.kind === 'segment' || wal.kind === 'partial') {
    file.header = parseWalHeader(data, what);
    checkSegmentMatchesName(file.header, wal.segment!, data.length, what);
  } else if (data.length === 0) {
    throw localFileError(`${what} is empty`);
  }
  return file;
}

export type PushOutcome = 'pushed' | 'already-archived';

/** Pushes one local WAL file with no-overwrite semantics. Shared by wal-push and its look-ahead. */
export async function pushWalFile(
  storage: Storage,
  file: LocalWalFile,
  config: Config,
  deadline: Deadline,
): Promise<{ outcome: PushOutcome; storedSize: number }> {
  const policy = retryPolicy(config);
  const what = `wal-push ${file.wal.name}`;
  if (file.header) await ensureManifest(storage, file.header, file.path, { spool: config.spool, policy, deadline });
  const body = await compressBuffer(config.compression, file.data, config.compressionLevel);
  const mine: StoredMeta = { sha256: file.sha256, size: file.data.length, codec: config.compression };
  const key = walObjectKey(file.wal);
  const res = await withRetry(what, policy, deadline, (signal) => storage.putIfAbsent(key, body, objectMeta(mine), { signal }));
  if (res.created) return { outcome: 'pushed', storedSize: body.length };

  // PostgreSQL re-archives after a crash: identical content is success, anything else is a conflict.
  let theirs: StoredMeta;
  try {
    theirs = parseStoredMeta(res.existing, `${storage.url}/${key}`);
  } catch {
    throw conflictError(
      `${file.wal.name} already exists in ${storage.url} without walvault metadata; refusing to overwrite it (local SHA-256 ${file.sha256})`,
    );
  }
  if (theirs.sha256 !== mine.sha256 || theirs.size !== mine.size) {
    throw conflictError(
      `${file.wal.name} is already archived with different content: archive SHA-256 ${theirs.sha256} (${theirs.size} bytes), ` +
        `local SHA-256 ${mine.sha256} (${mine.size} bytes); refusing to overwrite (two clusters writing to one repository?)`,
    );
  }
  return { outcome: 'already-archived', storedSize: res.existing.storedSize };
}

export async function walPush(config: Config, path: string, nameArg?: string): Promise<number> {
  const started = process.hrtime.bigint();
  const name = nameArg ?? basename(path);
  const wal = parseWalName(name);
  if (config.maxReadyBytes !== undefined && (wal.kind === 'segment' || wal.kind === 'partial')) {
    if (await dropIfOverLimit(path, name, config.maxReadyBytes, { spool: config.spool, repoUrl: storageUrlOf(config.repo) })) return 0;
  }
  const file = await readLocalWal(path, name);
  const deadline = new Deadline(config.deadline * 1000);
  const storage = await openStorage(config);
  try {
    const { outcome, storedSize } = await pushWalFile(storage, file, config, deadline);
    const ctx = { spool: config.spool, policy: retryPolicy(config), deadline, intervalMs: config.highWaterInterval * 1000 };
    if (wal.kind === 'segment') await advanceHighWater(storage, wal.timeline, wal.name, ctx);
    await flushGapMarkers(storage, ctx);
    if (outcome === 'pushed') {
      log.info(
        `pushed ${name} to ${storage.url} (${formatBytes(file.data.length)}, ${config.compression} ${formatBytes(storedSize)}, ${elapsed(started)})`,
      );
    } else {
      log.info(`${name} was already archived in ${storage.url} with identical content (SHA-256 ${file.sha256.slice(0, 16)}...); nothing to do`);
    }
    return 0;
  } finally {
    deadline.dispose();
    storage.close();
  }
}
