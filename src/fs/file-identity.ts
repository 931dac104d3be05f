import { statSync, type BigIntStats } from 'node:fs';
import { stat } from 'node:fs/promises';

// A file's identity from one fstat(): device, inode, size, mtime and ctime in nanoseconds. It stands
// in for re-hashing a WAL file that was hashed when it had this identity (README "Speed"). Sound
// because ctime cannot be set from user space (utimes() sets it to now) and every change of the
// inode (write, truncate, chmod, link, rename over it) moves it forward; a recycled or re-created
// segment is another inode or has a new ctime. Node built-ins only: wal-push's fast path uses it.

/** Decimal strings: bigints do not survive JSON, and dev/ino/ns exceed 2^53. */
export interface FileIdentity {
  dev: string;
  ino: string;
  size: string;
  mtimeNs: string;
  ctimeNs: string;
}

/**
 * How far before the read a file's ctime must be for its identity to be recorded. The kernel stamps
 * ctime from a clock that ticks at most every 10 ms (HZ >= 100) and lags the real time by up to a
 * tick, so a write in the same tick as the recorded ctime (during the read, or right after it) could
 * leave ctime unchanged: git's "racily clean" problem. A file changed less than this before the read
 * is simply hashed again by the fast path.
 */
export const RACY_MARGIN_NS = 50_000_000n;

export function identityOf(st: BigIntStats): FileIdentity {
  return { dev: String(st.dev), ino: String(st.ino), size: String(st.size), mtimeNs: String(st.mtimeNs), ctimeNs: String(st.ctimeNs) };
}

/** The identity of the file at `path` now (stat(), which follows a symlink), or undefined when it cannot be stat'ed. */
export async function identityAt(path: string): Promise<FileIdentity | undefined> {
  return stat(path, { bigint: true }).then(identityOf, () => undefined);
}

/** identityAt() for synchronous callers. */
export function identityAtSync(path: string): FileIdentity | undefined {
  try {
    return identityOf(statSync(path, { bigint: true }));
  } catch {
    return undefined;
  }
}

export function sameIdentity(a: FileIdentity, b: FileIdentity): boolean {
  return a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs;
}

/**
 * The identity to record for bytes read between `before` and `after` (fstat of the descriptor read
 * through), or undefined when the file changed meanwhile or was changed too shortly before
 * `readStartedMs` (wall clock, taken before `before`) for a later change to be told apart.
 */
export function stableIdentity(before: BigIntStats, after: BigIntStats, readStartedMs: number): FileIdentity | undefined {
  const a = identityOf(before);
  if (!sameIdentity(a, identityOf(after))) return undefined;
  if (before.ctimeNs + RACY_MARGIN_NS > BigInt(Math.floor(readStartedMs)) * 1_000_000n) return undefined;
  return a;
}

/** A recorded identity, or undefined when `x` is not one (an old record, a foreign file). */
export function parseIdentity(x: unknown): FileIdentity | undefined {
  if (!x || typeof x !== 'object') return undefined;
  const r = x as Record<string, unknown>;
  const keys = ['dev', 'ino', 'size', 'mtimeNs', 'ctimeNs'] as const;
  if (!keys.every((k) => typeof r[k] === 'string' && /^[0-9]{1,30}$/.test(r[k]))) return undefined;
  return { dev: r['dev'] as string, ino: r['ino'] as string, size: r['size'] as string, mtimeNs: r['mtimeNs'] as string, ctimeNs: r['ctimeNs'] as string };
}

/** The identity as the shell fast path prints it (GNU `stat -c '%d %i %s %.9Y %.9Z'`). */
export function identityLine(id: FileIdentity): string {
  const seconds = (ns: string) => {
    const n = BigInt(ns);
    return `${n / 1_000_000_000n}.${String(n % 1_000_000_000n).padStart(9, '0')}`;
  };
  return `${id.dev} ${id.ino} ${id.size} ${seconds(id.mtimeNs)} ${seconds(id.ctimeNs)}`;
}
