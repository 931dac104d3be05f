import { constants } from 'node:buffer';
import { retryPolicy, type Config } from '../common/config.js';
import { backupError, integrityError, isWalvaultError } from '../common/errors.js';
import { log } from '../common/log.js';
import { Deadline } from '../common/retry.js';
import { getVerifiedSmall, readVerifiedSmall } from '../archive/small-objects.js';
import { sha256Hex } from '../fs/hash.js';
import type { Storage } from '../storage/types.js';
import { hex8 } from '../wal/names.js';
import { BACKUP_ID_GRAMMAR, type BackupInfo } from './backup-info.js';
import { blockCount, CHECKSUM_BYTES } from './block-map.js';
import { backupKey, listBackups, readObjectText } from './catalog.js';
import { parseHistory, timelinePath, type HistoryEntry } from './coverage.js';
import { FILE_LIST_OBJECT, MAX_FILE_LIST_BYTES, parseFileList, type FileEntry, type FileList } from './file-list.js';
import { phase } from './wait.js';

// The reference of backup-push --incremental: the newest complete format-2 backup of the same system
// that recovery of the current timeline could have started from (its timeline is the current one or
// an ancestor, and it ended before the current timeline branched off), its file list (verified
// against its backup.json: a damaged one fails the backup, never a silently wrong incremental), and
// its files' block maps, read as the files that need them are stored.

export interface Reference {
  info: BackupInfo;
  list: FileList;
  byPath: Map<string, FileEntry>;
  /** The file's block map and size in the reference, or none (no map: every block is stored). */
  blockMap(path: string, signal: AbortSignal): Promise<{ map: Buffer; size: number } | undefined>;
}

/** The newest usable reference, or none. `timeline`: the cluster's current timeline. */
export async function findReference(storage: Storage, config: Config, cluster: Cluster): Promise<BackupInfo | undefined> {
  const deadline = new Deadline(config.deadline * 1000);
  try {
    const all = await listBackups(storage, retryPolicy(config), deadline);
    const history = await timelineHistory(storage, config, cluster.timeline);
    return pickReference(all, cluster, history);
  } finally {
    deadline.dispose();
  }
}

export interface Cluster {
  systemIdentifier: string;
  timeline: number;
  segSize: number;
}

/**
 * The newest of `backups` (oldest first) that recovery onto the cluster's timeline could start from:
 * format 2, same system, and on the current timeline or on an ancestor left after the backup ended.
 */
export function pickReference(backups: readonly BackupInfo[], cluster: Cluster, history: HistoryEntry[]): BackupInfo | undefined {
  for (const b of [...backups].reverse()) {
    if (b.format !== 2 || b.systemIdentifier !== cluster.systemIdentifier) continue;
    try {
      timelinePath(b, cluster.timeline, history, cluster.segSize);
    } catch (e) {
      if (!isWalvaultError(e)) throw e;
      log.debug(`backup ${b.id} is not a reference for timeline ${cluster.timeline}: ${e.message}`);
      continue;
    }
    return b;
  }
  return undefined;
}

async function timelineHistory(storage: Storage, config: Config, tli: number): Promise<HistoryEntry[]> {
  if (tli === 1) return [];
  const key = `wal/${hex8(tli)}.history`;
  const text = await phase(config, `read ${key}`, (signal) => readObjectText(storage, key, signal));
  if (text === null) throw backupError(`the archive ${storage.url} has no ${key} for the cluster's timeline ${tli}: cannot tell which backups it descends from`);
  return parseHistory(text, tli, `${storage.url}/${key}`);
}

/** The reference's file list, verified against its backup.json, and a reader of its block maps. */
export async function loadReference(storage: Storage, config: Config, info: BackupInfo): Promise<Reference> {
  const key = backupKey(info.id, FILE_LIST_OBJECT);
  const what = `${storage.url}/${key}`;
  const damaged = (why: string) => backupError(`the reference backup ${info.id} is damaged (${why}); --incremental needs a sound reference: take a full backup (without --incremental)`);
  const deadline = new Deadline(config.deadline * 1000);
  let body: Buffer | null;
  try {
    body = await readVerifiedSmall(storage, key, { policy: retryPolicy(config), deadline, what: `get ${key}`, maxSize: MAX_FILE_LIST_BYTES });
  } catch (e) {
    if (isWalvaultError(e) && ['CorruptObject', 'IntegrityError'].includes(e.code)) throw damaged(e.message);
    throw e;
  } finally {
    deadline.dispose();
  }
  if (!body) throw damaged(`${what} is missing`);
  const digest = sha256Hex(body);
  if (digest !== info.sha256) throw damaged(`${what} has SHA-256 ${digest}, its backup.json records ${info.sha256}`);
  if (body.length > constants.MAX_STRING_LENGTH) throw damaged(`${what} is too large to parse here`);
  let list: FileList;
  try {
    list = parseFileList(body.toString('utf8'), info.id, what, BACKUP_ID_GRAMMAR);
  } catch (e) {
    throw damaged(e instanceof Error ? e.message : String(e));
  }
  const byPath = new Map<string, FileEntry>();
  for (const e of list.entries) if (e.type === 'file') byPath.set(e.path, e);
  return { info, list, byPath, blockMap: blockMapReader(storage, config, list, byPath) };
}

/** Block maps are read per map object (one per data object) and kept for the few files that share one. */
function blockMapReader(storage: Storage, config: Config, list: FileList, byPath: Map<string, FileEntry>): Reference['blockMap'] {
  const cache = new Map<string, Promise<Buffer>>();
  const CACHED = 16;
  const fetchMap = (key: string) => {
    let p = cache.get(key);
    if (!p) {
      p = phase(config, `get ${key}`, async (signal) => {
        const got = await getVerifiedSmall(storage, key, 64 * 1024 * 1024, signal);
        if (!got) throw integrityError(`${storage.url}/${key} is missing: the reference's block maps are damaged`, { retryable: false });
        return got;
      });
      cache.set(key, p);
      if (cache.size > CACHED) cache.delete(cache.keys().next().value!);
    }
    return p;
  };
  return async (path) => {
    const e = byPath.get(path);
    if (!e?.blocks || list.blockSize === undefined) return undefined;
    const body = await fetchMap(backupKey(e.blocks.backup, e.blocks.name));
    const length = blockCount(e.size, list.blockSize) * CHECKSUM_BYTES;
    if (e.blocks.offset + length > body.length) {
      throw backupError(`the reference's block map ${e.blocks.backup}/${e.blocks.name} is too short for ${path}; take a full backup (without --incremental)`);
    }
    return { map: body.subarray(e.blocks.offset, e.blocks.offset + length), size: e.size };
  };
}
