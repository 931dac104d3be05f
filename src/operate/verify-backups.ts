import { constants } from 'node:buffer';
import { isWalvaultError } from '../common/errors.js';
import { formatBytes } from '../common/log.js';
import { withRetry, type Deadline, type RetryPolicy } from '../common/retry.js';
import { readVerifiedSmall } from '../archive/small-objects.js';
import { BACKUP_ID_GRAMMAR, type BackupInfo } from '../backup/backup-info.js';
import { backupKey, DATA_OBJECT, MANIFEST_OBJECT } from '../backup/catalog.js';
import type { HistoryEntry } from '../backup/coverage.js';
import { FILE_LIST_OBJECT, MAX_FILE_LIST_BYTES, parseFileList } from '../backup/file-list.js';
import { sha256Hex } from '../fs/hash.js';
import type { ListedObject, Storage } from '../storage/types.js';
import { backupWal, describeRange } from './continuity.js';
import { walRuns, type Inventory, type WalEntry } from './inventory.js';

// verify's look at the backups: each complete backup has the WAL that makes it consistent and every
// object it names (format 2: its file list's data objects and block maps, also those of the earlier
// backups an incremental one refers to) with the size it recorded. What --deep then reads is
// collected here with what each object must hash to.

/** One object --deep reads, and what its content must be beyond its own metadata. */
export interface DeepTask {
  object: ListedObject;
  /** SHA-256 and size of the uncompressed content that whoever names the object recorded. */
  expect?: { sha256: string; size?: number; by: string };
  /** A WAL segment (or .partial): its page header is checked against the manifest and this name. */
  segment?: string;
}

export interface Findings {
  problems: string[];
  notes: string[];
  /** Deep tasks by key (an object several backups name is read once). */
  tasks: Map<string, DeepTask>;
}

export interface BackupSummary {
  id: string;
  type: 'full' | 'incremental';
  objects: number;
  walSegments: number;
}

type Ctx = { policy: RetryPolicy; deadline: Deadline };

export async function checkBackups(
  storage: Storage,
  inv: Inventory,
  histories: Map<number, HistoryEntry[]>,
  segments: Map<string, WalEntry>,
  ctx: Ctx,
  out: Findings,
): Promise<BackupSummary[]> {
  const listed = new Map<string, ListedObject>();
  for (const d of inv.backupDirs.values()) for (const o of d.objects) listed.set(o.key, o);
  const summaries: BackupSummary[] = [];
  for (const b of inv.backups) {
    const s: BackupSummary = { id: b.id, type: b.type ?? 'full', objects: 0, walSegments: 0 };
    summaries.push(s);
    const wal = backupWal(b, histories);
    if (!wal) {
      out.problems.push(`backup ${b.id} ends on timeline ${b.stopTimeline}, whose history file wal/ is missing or does not lead back to timeline ${b.timeline}`);
    } else {
      s.walSegments = wal.length;
      const missing = wal.filter((n) => !segments.has(n)).map((name) => ({ name }));
      for (const g of walRuns(missing, b.walSegmentSize)) out.problems.push(`backup ${b.id} lacks WAL ${describeRange(g)} needed to make it consistent`);
    }
    const present = async (key: string, recorded: number | undefined, who: string): Promise<ListedObject | undefined> => {
      const o = listed.get(key);
      if (!o) {
        out.problems.push(`backup ${b.id}: ${key}${who} is missing`);
        return undefined;
      }
      s.objects++;
      if (recorded !== undefined && o.storedSize !== recorded) {
        // A listing may count more than the stored bytes (file:// objects carry their metadata in a header).
        const head = await withRetry(`head ${key}`, ctx.policy, ctx.deadline, (signal) => storage.head(key, { signal }));
        if (!head) out.problems.push(`backup ${b.id}: ${key}${who} was listed but is gone`);
        else if (head.storedSize !== recorded) {
          out.problems.push(`backup ${b.id}: ${key}${who} holds ${head.storedSize} bytes, the backup recorded ${recorded} (${formatBytes(recorded)})`);
        }
      }
      return o;
    };
    const manifest = await present(backupKey(b.id, MANIFEST_OBJECT), undefined, '');
    if (manifest) addTask(out, manifest, b.manifestSha256 ? { sha256: b.manifestSha256, by: `backup ${b.id}` } : undefined);
    if (b.format === 1) {
      const tar = await present(backupKey(b.id, DATA_OBJECT), undefined, '');
      if (tar) addTask(out, tar, { sha256: b.sha256, size: b.sizeBytes, by: `backup ${b.id}` });
      continue;
    }
    const listKey = backupKey(b.id, FILE_LIST_OBJECT);
    if (!(await present(listKey, undefined, ''))) continue;
    const list = await readFileList(storage, b, listKey, ctx, out);
    if (!list) continue;
    const referenced = (id: string) => (id === b.id ? '' : ` (of backup ${id}, which this incremental one refers to)`);
    for (const o of list.objects) {
      const key = backupKey(o.backup, o.name);
      const got = await present(key, o.storedBytes, referenced(o.backup));
      if (got) addTask(out, got, { sha256: o.sha256, size: o.size, by: `the file list of backup ${b.id}` });
    }
    const maps = new Set<string>();
    for (const e of list.entries) if (e.type === 'file' && e.blocks) maps.add(backupKey(e.blocks.backup, e.blocks.name));
    for (const key of [...maps].sort()) {
      const got = await present(key, undefined, referenced(key.split('/')[1]!));
      if (got) addTask(out, got, undefined);
    }
  }
  for (const [id, e] of inv.rejected) out.problems.push(`backup ${id} has an unusable backup.json: ${e.message}`);
  for (const d of inv.backupDirs.values()) {
    if (d.hasSentinel) continue;
    out.notes.push(
      `backups/${d.id}/ has no backup.json (${d.objects.length} object(s), last written ${d.newest.toISOString()}): ` +
        'a backup-push still running, or one that failed (delete removes it once stale)',
    );
  }
  return summaries;
}

function addTask(out: Findings, object: ListedObject, expect: DeepTask['expect']): void {
  if (!out.tasks.has(object.key)) out.tasks.set(object.key, { object, ...(expect ? { expect } : {}) });
}

/** files.json read whole (its SHA-256 must be backup.json's) and parsed; null after naming the problem. */
async function readFileList(storage: Storage, b: BackupInfo, key: string, ctx: Ctx, out: Findings) {
  let body: Buffer | null;
  try {
    body = await readVerifiedSmall(storage, key, { ...ctx, what: `get ${key}`, maxSize: MAX_FILE_LIST_BYTES });
  } catch (e) {
    if (!isWalvaultError(e) || !['CorruptObject', 'IntegrityError'].includes(e.code)) throw e;
    out.problems.push(`backup ${b.id}: ${key} is damaged: ${e.message}`);
    return null;
  }
  if (!body) {
    out.problems.push(`backup ${b.id}: ${key} was listed but is gone`);
    return null;
  }
  const digest = sha256Hex(body);
  if (digest !== b.sha256) {
    out.problems.push(`backup ${b.id}: ${key} has SHA-256 ${digest}, its backup.json records ${b.sha256}`);
    return null;
  }
  if (body.length > constants.MAX_STRING_LENGTH) {
    out.problems.push(`backup ${b.id}: ${key} is too large to parse here`);
    return null;
  }
  try {
    return parseFileList(body.toString('utf8'), b.id, `${storage.url}/${key}`, BACKUP_ID_GRAMMAR);
  } catch (e) {
    out.problems.push(`backup ${b.id}: ${e instanceof Error ? e.message : String(e)}`);
    return null;
  }
}
