import { readdir } from 'node:fs/promises';
import { nextSegment, parseWalName, type WalName } from '../wal/names.js';

// Look-ahead for wal-push: which other ready files to upload along with the one PostgreSQL asked for,
// in the order PostgreSQL itself will ask for them (pgarch.c: timeline history files first, then by
// name, i.e. oldest segment first). PostgreSQL's .ready files are only read, never renamed: the
// archiver stays the one that marks files .done, after its own wal-push call for each exits 0.

/** Names (without `.ready`) of the files waiting in `<walDir>/archive_status`; [] if unreadable. */
export async function listReady(walDir: string): Promise<string[]> {
  const entries = await readdir(`${walDir}/archive_status`).catch(() => [] as string[]);
  return entries.filter((e) => e.endsWith('.ready')).map((e) => e.slice(0, -'.ready'.length));
}

/** PostgreSQL's archive order: history files first, then plain name order. */
export function archiveOrder(a: string, b: string): number {
  const ha = a.endsWith('.history');
  const hb = b.endsWith('.history');
  if (ha !== hb) return ha ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Up to `limit` ready files to upload besides `foreground`: other history files, then files that
 * sort after the foreground one (for a segment: the newer segments, .partial and .backup files).
 * Names that are not WAL file names are ignored; `skip` holds names already taken care of.
 */
export function pickLookahead(ready: string[], foreground: WalName, limit: number, skip: Set<string> = new Set()): WalName[] {
  if (limit <= 0) return [];
  const picked: WalName[] = [];
  for (const name of [...ready].sort(archiveOrder)) {
    if (picked.length >= limit) break;
    if (name === foreground.name || skip.has(name)) continue;
    let wal: WalName;
    try {
      wal = parseWalName(name);
    } catch {
      continue;
    }
    if (wal.kind !== 'history' && foreground.kind !== 'history' && name <= foreground.name) continue;
    picked.push(wal);
  }
  return picked;
}

/**
 * The highest segment `last` such that `first` and every segment after it up to `last` are in
 * `archived` (plus `first` itself): the range the high-water mark may claim after a look-ahead batch.
 */
export function contiguousEnd(first: string, archived: Set<string>, segSize: number): string {
  let last = first;
  for (;;) {
    const next = nextSegment(last, segSize);
    if (!archived.has(next)) return last;
    last = next;
  }
}
