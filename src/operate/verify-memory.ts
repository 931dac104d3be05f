import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ensureDir } from '../fs/atomic.js';
import { writeJsonReplace } from '../fs/json-file.js';
import { shortHash } from '../fs/short-hash.js';
import type { ListedObject } from '../storage/types.js';

// What verify --deep read and found sound, so that a daily run re-reads only what is new or changed.
// An object is known by a short hash of its key, stored size and ETag (file://: inode, mtime, size):
// 16 hex digits per object keeps the file small for a repository of a million objects, and a
// rewritten object never matches. Objects no longer listed are dropped at each save.

export const MEMORY_FILE = 'verified.json';
export const RESULT_FILE = 'verify-result.json';

const token = (o: ListedObject): string | undefined => (o.etag ? shortHash(`${o.key}\0${o.storedSize}\0${o.etag}`, 16) : undefined);

export class VerifyMemory {
  private readonly fresh = new Set<string>();
  private readonly failed = new Set<string>();

  private constructor(
    private readonly file: string,
    private readonly known: Set<string>,
  ) {}

  /** The memory in `dir` (the repository's spool directory); an unreadable file is an empty memory. */
  static async load(dir: string): Promise<VerifyMemory> {
    const file = join(dir, MEMORY_FILE);
    let known = new Set<string>();
    try {
      const x = JSON.parse(await readFile(file, 'utf8')) as { format?: number; objects?: unknown };
      if (x.format === 1 && Array.isArray(x.objects)) known = new Set(x.objects.filter((t): t is string => typeof t === 'string' && /^[0-9a-f]{16}$/.test(t)));
    } catch {
      // missing or damaged: everything is read again, which is only slower
    }
    return new VerifyMemory(file, known);
  }

  has(o: ListedObject): boolean {
    const t = token(o);
    return t !== undefined && this.known.has(t);
  }

  remember(o: ListedObject): void {
    const t = token(o);
    if (t) this.fresh.add(t);
  }

  forget(o: ListedObject): void {
    const t = token(o);
    if (t) this.failed.add(t);
  }

  /** Writes (temp file + rename) what is known of the objects still `listed`. */
  async save(listed: Iterable<ListedObject>): Promise<number> {
    const keep: string[] = [];
    for (const o of listed) {
      const t = token(o);
      if (t && !this.failed.has(t) && (this.known.has(t) || this.fresh.has(t))) keep.push(t);
    }
    await ensureDir(join(this.file, '..'));
    await writeJsonReplace(this.file, { format: 1, objects: keep });
    return keep.length;
  }
}
