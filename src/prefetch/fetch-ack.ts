import { readdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../common/config.js';
import { identityLine, type FileIdentity } from '../fs/file-identity.js';
import { privateAckDir, wrapperAcksOf, writeAckFile } from '../worker/wrapper-acks.js';

// Fetch acknowledgements: how the prefetch worker tells the shell wrapper (scripts/wrapper/fetch.bash)
// that a segment in the spool may be handed to PostgreSQL without starting Node. One file per
// segment, `<WALVAULT_WRAPPER_DIR>/fetch/<NAME>`, written atomically (temp + rename) only after the
// segment was downloaded, verified against the repository's SHA-256, fsynced and renamed into the
// spool, and removed when the segment is handed over or leaves the spool. Format (lines):
//
//   walvault-fetch-ack 1
//   <NAME>
//   <absolute path of the prefetched file>
//   <dev> <ino> <size> <mtime s.ns> <ctime s.ns>     stat() of that file right after the rename
//   <SHA-256 of its bytes>                           (for the log; the wrapper does not hash)
//   <log level>                                      whether the wrapper logs the hand-over
//   <pid of the worker>                              acks of a worker that is gone are not used
//   <the wrapper context, verbatim, to the end>      WALVAULT_WRAPPER_CONTEXT of the wal-fetch that
//                                                    started the worker
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
  logLevel: string;
}

/**
 * The ack target of a wal-fetch started by the wrapper (src/worker/wrapper-acks.ts: a well-formed
 * context without secrets, not with fastPathHash), its `fetch/` directory created private; never a
 * directory of another owner or one that others may enter.
 */
export function ackTargetFrom(config: Config, env: NodeJS.ProcessEnv = process.env): AckTarget | undefined {
  const acks = wrapperAcksOf(config, env);
  if (!acks) return undefined;
  try {
    return { dir: privateAckDir(acks.dir, 'fetch'), context: acks.context, logLevel: config.logLevel };
  } catch {
    return undefined;
  }
}

export function formatAck(a: { name: string; file: string; identity: FileIdentity; sha256: string; logLevel: string; pid: number; context: string }): string {
  return [ACK_MAGIC, a.name, a.file, identityLine(a.identity), a.sha256, a.logLevel, String(a.pid), a.context].join('\n') + '\n';
}

/** Writes (or replaces) the ack of `name`. Best effort: without it the wrapper runs Node. */
export function writeAck(t: AckTarget, a: { name: string; file: string; identity: FileIdentity; sha256: string }): boolean {
  if (!SEGMENT.test(a.name) || /[\n\0]/.test(a.file)) return false;
  try {
    writeAckFile(t.dir, a.name, formatAck({ ...a, logLevel: t.logLevel, pid: process.pid, context: t.context }));
    return true;
  } catch {
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
