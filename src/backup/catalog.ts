import { backupError, isWalvaultError } from '../common/errors.js';
import { log } from '../common/log.js';
import { withRetry, type Deadline, type RetryPolicy } from '../common/retry.js';
import { smallObjectMeta } from '../archive/objects.js';
import { getVerifiedSmall } from '../archive/small-objects.js';
import type { Storage } from '../storage/types.js';
import { parseLsn } from '../wal/names.js';
import { BACKUP_ID_GRAMMAR, validateBackupInfo, type BackupInfo } from './backup-info.js';

// <prefix>/backups/<id>/base.tar         the tar stream of pg_basebackup -Ft, compressed (codec in metadata)
// <prefix>/backups/<id>/backup_manifest  PostgreSQL's manifest, uncompressed, its own object
// <prefix>/backups/<id>/backup.json      the sentinel, written last: a backup without it does not exist
export const BACKUPS_PREFIX = 'backups/';
export const DATA_OBJECT = 'base.tar';
export const MANIFEST_OBJECT = 'backup_manifest';
export const SENTINEL_OBJECT = 'backup.json';

export const backupKey = (id: string, object: string): string => `${BACKUPS_PREFIX}${id}/${object}`;

/** Backup ids: `base_<start segment>_<UTC yyyymmddThhmmssZ>`; sortable, but always sort by startTime. */
export function makeBackupId(startSegment: string, startTime: Date): string {
  const ts = startTime.toISOString().replace(/\.\d+Z$/, 'Z').replace(/[-:]/g, '');
  return `base_${startSegment}_${ts}`;
}

export function isBackupId(s: string): boolean {
  return BACKUP_ID_GRAMMAR.test(s);
}

/** Oldest first by recorded start time, then start LSN; never by name. */
export function sortBackups(list: BackupInfo[]): BackupInfo[] {
  return [...list].sort((a, b) => {
    const t = Date.parse(a.startTime) - Date.parse(b.startTime);
    if (t !== 0) return t;
    const la = parseLsn(a.startLsn);
    const lb = parseLsn(b.startLsn);
    return la < lb ? -1 : la > lb ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
  });
}

export function sentinelBody(info: BackupInfo): { body: Buffer; meta: Record<string, string> } {
  const body = Buffer.from(JSON.stringify(info, null, 2) + '\n');
  return { body, meta: smallObjectMeta(body) };
}

/** Larger than any backup.json or timeline history file walvault writes. */
const MAX_TEXT_OBJECT = 16 * 1024 * 1024;

/** A small object's text (WAL history files, backup.json), verified against its metadata like every read. */
export async function readObjectText(storage: Storage, key: string, signal: AbortSignal): Promise<string | null> {
  const body = await getVerifiedSmall(storage, key, MAX_TEXT_OBJECT, signal);
  return body === null ? null : body.toString('utf8');
}

/** A backup.json that exists: validated field by field (a BackupError naming the object otherwise). */
async function readSentinel(storage: Storage, key: string, policy: RetryPolicy, deadline: Deadline): Promise<BackupInfo | null> {
  const text = await withRetry(`read ${key}`, policy, deadline, (signal) => readObjectText(storage, key, signal));
  if (text === null) return null;
  const what = `${storage.url}/${key}`;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw backupError(`${what} is not a valid backup description: not JSON`);
  }
  const info = validateBackupInfo(parsed, what);
  const dir = key.slice(BACKUPS_PREFIX.length).split('/')[0];
  if (info.id !== dir) throw backupError(`${what} names backup ${info.id} but sits under ${dir}`);
  return info;
}

/**
 * Every complete backup (the ones with backup.json), oldest first. A backup.json that fails
 * validation is left out with a warning, and its error kept in `rejected` (by backup id) so that a
 * command asking for that very backup can fail with it.
 */
export async function listBackups(
  storage: Storage,
  policy: RetryPolicy,
  deadline: Deadline,
  rejected: Map<string, Error> = new Map(),
): Promise<BackupInfo[]> {
  const keys = await withRetry('list backups', policy, deadline, async (signal) => {
    const out: string[] = [];
    for await (const o of storage.list(BACKUPS_PREFIX, { signal })) {
      const rest = o.key.slice(BACKUPS_PREFIX.length);
      const parts = rest.split('/');
      if (parts.length !== 2 || parts[1] !== SENTINEL_OBJECT) continue;
      if (isBackupId(parts[0]!)) out.push(o.key);
      else rejected.set(parts[0]!, backupError(`${storage.url}/${o.key}: ${JSON.stringify(parts[0]).slice(0, 80)} is not a backup id walvault creates`));
    }
    return out;
  });
  const found: BackupInfo[] = [];
  // A few GETs at a time: hundreds of backups must not open hundreds of sockets.
  for (let i = 0; i < keys.length; i += 8) {
    const batch = await Promise.all(
      keys.slice(i, i + 8).map((k) =>
        readSentinel(storage, k, policy, deadline).catch((e: unknown) => {
          // Damaged (fails its SHA-256 after the retries) or invalid: that backup is left out, never the listing.
          if (!isWalvaultError(e) || !['BackupError', 'CorruptObject', 'IntegrityError'].includes(e.code)) throw e;
          rejected.set(k.slice(BACKUPS_PREFIX.length).split('/')[0]!, e);
          return null;
        }),
      ),
    );
    for (const b of batch) if (b) found.push(b);
  }
  for (const e of rejected.values()) log.warn(`${e.message}; ignoring that backup`);
  return sortBackups(found);
}

export async function readBackup(storage: Storage, id: string, policy: RetryPolicy, deadline: Deadline): Promise<BackupInfo | null> {
  return readSentinel(storage, backupKey(id, SENTINEL_OBJECT), policy, deadline);
}
