import { withRetry, type Deadline, type RetryPolicy } from '../common/retry.js';
import type { BackupInfo } from '../backup/backup-info.js';
import { BACKUPS_PREFIX, isBackupId, listBackups, SENTINEL_OBJECT } from '../backup/catalog.js';
import { MANIFEST_KEY, readRemoteManifest } from '../archive/manifest.js';
import type { RepoManifest } from '../archive/manifest-parse.js';
import type { ListedObject, Storage } from '../storage/types.js';
import { parseWalName, segmentNumber, type WalFileKind } from '../wal/names.js';

// What a repository holds, from one listing of its whole prefix plus the backups' descriptions: the
// common ground of delete (what may go), verify (what must be there), info (the recovery window) and
// check. Every key is put in exactly one place, so a key nothing here knows is visible as `other`
// (never silently ignored, never deleted by guesswork).

export interface WalEntry extends ListedObject {
  /** The WAL file name (the key's last part). */
  name: string;
  kind: WalFileKind;
}

/** The archived WAL of one timeline, each list sorted by name (= by position in the WAL). */
export interface TimelineWal {
  tli: number;
  segments: WalEntry[];
  partials: WalEntry[];
  /** `<segment>.<offset>.backup` files (backup history files PostgreSQL archives). */
  backupLabels: WalEntry[];
}

/** One `backups/<id>/` directory as listed: complete (with backup.json) or not. */
export interface BackupDir {
  id: string;
  /** Its objects, keys relative to the repository. */
  objects: ListedObject[];
  hasSentinel: boolean;
  /** The newest lastModified among its objects (when an incomplete upload last made progress). */
  newest: Date;
}

export interface Inventory {
  url: string;
  /** walvault.json (null: nothing was ever archived here, or it was removed). */
  manifest: RepoManifest | null;
  /** Complete backups with a valid backup.json, oldest first (catalog.ts listBackups). */
  backups: BackupInfo[];
  /** Backups whose backup.json exists but is damaged or invalid, by id, with the reason. */
  rejected: Map<string, Error>;
  /** Every `backups/<id>/` directory, complete or not, by id. */
  backupDirs: Map<string, BackupDir>;
  /** Archived WAL by timeline. */
  timelines: Map<number, TimelineWal>;
  /** `wal/<TLI>.history` objects by timeline. */
  histories: Map<number, WalEntry>;
  /** `state/gaps/<name>.json`: WAL that maxReadyBytes dropped (the name is the first segment dropped). */
  gapMarkers: Array<ListedObject & { name: string }>;
  /** High-water marks (`state/timeline-<TLI>/...`, the older `state/timeline-<TLI>.json`) and other bookkeeping under state/. */
  state: ListedObject[];
  /** Keys that match no layout walvault writes (foreign or left-over objects). */
  other: ListedObject[];
  /** When the listing began (objects newer than this may be missing from it). */
  listedAt: Date;
}

const GAP_MARKER = /^state\/gaps\/([0-9A-F]{24})\.json$/;

/** Lists the whole repository once and sorts every key into its place; reads the backups' descriptions. */
export async function takeInventory(storage: Storage, ctx: { policy: RetryPolicy; deadline: Deadline }): Promise<Inventory> {
  const listedAt = new Date();
  const objects = await withRetry('list the repository', ctx.policy, ctx.deadline, async (signal) => {
    const out: ListedObject[] = [];
    for await (const o of storage.list('', { signal })) out.push(o);
    return out;
  });
  const rejected = new Map<string, Error>();
  const [manifest, backups] = await Promise.all([
    objects.some((o) => o.key === MANIFEST_KEY) ? readRemoteManifest(storage, ctx.policy, ctx.deadline) : Promise.resolve(null),
    listBackups(storage, ctx.policy, ctx.deadline, rejected),
  ]);
  const inv: Inventory = {
    url: storage.url,
    manifest,
    backups,
    rejected,
    backupDirs: new Map(),
    timelines: new Map(),
    histories: new Map(),
    gapMarkers: [],
    state: [],
    other: [],
    listedAt,
  };
  for (const o of objects) place(inv, o);
  for (const t of inv.timelines.values()) {
    for (const list of [t.segments, t.partials, t.backupLabels]) list.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }
  return inv;
}

function place(inv: Inventory, o: ListedObject): void {
  const key = o.key;
  if (key === MANIFEST_KEY) return;
  if (key.startsWith('wal/')) {
    const wal = walEntry(o);
    if (!wal) return void inv.other.push(o);
    if (wal.kind === 'history') return void inv.histories.set(wal.tli, wal.entry);
    const t = timeline(inv, wal.tli);
    (wal.kind === 'segment' ? t.segments : wal.kind === 'partial' ? t.partials : t.backupLabels).push(wal.entry);
    return;
  }
  if (key.startsWith(BACKUPS_PREFIX)) {
    const [id, ...rest] = key.slice(BACKUPS_PREFIX.length).split('/');
    if (!id || !isBackupId(id) || rest.length === 0) return void inv.other.push(o);
    let dir = inv.backupDirs.get(id);
    if (!dir) inv.backupDirs.set(id, (dir = { id, objects: [], hasSentinel: false, newest: o.lastModified }));
    dir.objects.push(o);
    if (rest.join('/') === SENTINEL_OBJECT) dir.hasSentinel = true;
    if (o.lastModified > dir.newest) dir.newest = o.lastModified;
    return;
  }
  const gap = GAP_MARKER.exec(key);
  if (gap) return void inv.gapMarkers.push({ ...o, name: gap[1]! });
  if (key.startsWith('state/')) return void inv.state.push(o);
  inv.other.push(o);
}

/** A key under wal/ that is where walvault stores that WAL file (shard and name agree), or null. */
function walEntry(o: ListedObject): { kind: WalFileKind; tli: number; entry: WalEntry } | null {
  const parts = o.key.split('/');
  const name = parts[parts.length - 1]!;
  let kind: WalFileKind;
  let tli: number;
  try {
    const w = parseWalName(name);
    kind = w.kind;
    tli = w.timeline;
  } catch {
    return null;
  }
  const sharded = kind === 'segment' || kind === 'partial';
  const expected = sharded ? `wal/${name.slice(0, 16)}/${name}` : `wal/${name}`;
  if (o.key !== expected) return null;
  return { kind, tli, entry: { ...o, name, kind } };
}

function timeline(inv: Inventory, tli: number): TimelineWal {
  let t = inv.timelines.get(tli);
  if (!t) inv.timelines.set(tli, (t = { tli, segments: [], partials: [], backupLabels: [] }));
  return t;
}

/** An unbroken run of archived segments of one timeline, first and last inclusive. */
export interface WalRun {
  first: string;
  last: string;
  count: number;
}

/** The unbroken runs of a timeline's segments (its gaps are what lies between them). */
export function walRuns(segments: readonly { name: string }[], segSize: number): WalRun[] {
  const runs: WalRun[] = [];
  let prev: bigint | undefined;
  for (const s of segments) {
    const n = segmentNumber(s.name, segSize);
    const run = runs[runs.length - 1];
    if (run && prev !== undefined && n === prev + 1n) {
      run.last = s.name;
      run.count++;
    } else {
      runs.push({ first: s.name, last: s.name, count: 1 });
    }
    prev = n;
  }
  return runs;
}
