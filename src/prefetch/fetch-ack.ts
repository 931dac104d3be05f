import { lstatSync, mkdirSync, readdirSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FileIdentity } from '../fs/file-identity.js';

// Fetch acknowledgements: how the prefetch worker tells the shell wrapper (scripts/wrapper/fetch.bash)
// that a segment in the spool may be handed to PostgreSQL without starting Node. One file per
// segment, `<WALVAULT_WRAPPER_DIR>/fetch/<NAME>`, written atomically (temp + rename) only after the
// segment was downloaded, verified against the repository's SHA-256, fsynced and renamed into the
// spool, and removed when the segment leaves the spool. Format (lines):
//
//   walvault-fetch-ack 1
//   <NAME>
//   <absolute path of the prefetched file>
//   <dev> <ino> <size> <mtime s.ns> <ctime s.ns>     stat() of that file right after the rename
//   <SHA-256 of its bytes>                           (for the log; the wrapper does not hash)
//   <the wrapper context, verbatim, to the end>      WALVAULT_WRAPPER_CONTEXT of the wal-fetch that
//                                                    started or last asked the worker
//
// The wrapper serves it only when the context it computes now is the same, byte for byte, and the
// file's identity is the recorded one (see fetch.bash's header for why that is enough).

export const ACK_MAGIC = 'walvault-fetch-ack 1';
const SEGMENT = /^[0-9A-F]{24}$/;

/** Where and with which context the worker writes acks; absent when the wrapper is not in use. */
export interface AckTarget {
  /** `<WALVAULT_WRAPPER_DIR>/fetch` */
  dir: string;
  context: string;
}

/**
 * The ack target of a wal-fetch started by the wrapper: both variables present, the context a
 * plausible one, the wrapper directory private to this user (created 0700 when missing; a
 * directory of another owner, with group/other bits or a symlink on the way is never written to).
 */
export function ackTargetFrom(env: NodeJS.ProcessEnv, spool: string): AckTarget | undefined {
  const context = env['WALVAULT_WRAPPER_CONTEXT'];
  const wrapperDir = env['WALVAULT_WRAPPER_DIR'];
  if (!context || !wrapperDir || !context.startsWith('walvault-context 1\n')) return undefined;
  if (!wrapperDir.startsWith('/') || /[\n\0]/.test(wrapperDir) || /[\0]/.test(context)) return undefined;
  if (/[\n\0]/.test(spool)) return undefined;
  const dir = join(wrapperDir, 'fetch');
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    for (const d of [wrapperDir, dir]) if (!privateDir(d)) return undefined;
  } catch {
    return undefined;
  }
  return { dir, context };
}

function privateDir(d: string): boolean {
  const st = lstatSync(d);
  const euid = process.geteuid?.();
  return st.isDirectory() && (euid === undefined || st.uid === euid) && (st.mode & 0o077) === 0;
}

/** `<dev> <ino> <size> <mtime s.ns> <ctime s.ns>`, as GNU `stat -c '%d %i %s %.9Y %.9Z'` prints it. */
export function identityLine(id: FileIdentity): string {
  const ns = (v: string) => {
    const b = BigInt(v);
    return `${b / 1_000_000_000n}.${(b % 1_000_000_000n).toString().padStart(9, '0')}`;
  };
  return `${id.dev} ${id.ino} ${id.size} ${ns(id.mtimeNs)} ${ns(id.ctimeNs)}`;
}

export function formatAck(a: { name: string; file: string; identity: FileIdentity; sha256: string; context: string }): string {
  return `${ACK_MAGIC}\n${a.name}\n${a.file}\n${identityLine(a.identity)}\n${a.sha256}\n${a.context}`;
}

/** Writes (or replaces) the ack of `name`. Best effort: without it the wrapper runs Node. */
export function writeAck(t: AckTarget, a: { name: string; file: string; identity: FileIdentity; sha256: string }): boolean {
  if (!SEGMENT.test(a.name) || /[\n\0]/.test(a.file)) return false;
  const path = join(t.dir, a.name);
  const temp = join(t.dir, `.${a.name}.${process.pid}.tmp`);
  try {
    writeFileSync(temp, formatAck({ ...a, context: t.context }), { mode: 0o600 });
    renameSync(temp, path);
    return true;
  } catch {
    try {
      unlinkSync(temp);
    } catch {
      // not there
    }
    return false;
  }
}

export function removeAck(t: AckTarget, name: string): void {
  if (!SEGMENT.test(name)) return;
  try {
    unlinkSync(join(t.dir, name));
  } catch {
    // gone already
  }
}

/** Removes the acks `drop(name)` accepts (all of them by default). */
export function removeAcks(t: AckTarget, drop: (name: string) => boolean = () => true): void {
  let names: string[];
  try {
    names = readdirSync(t.dir);
  } catch {
    return;
  }
  for (const n of names) if (SEGMENT.test(n) && drop(n)) removeAck(t, n);
}
