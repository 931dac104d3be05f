import { readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { describe } from '../common/errors.js';
import { log } from '../common/log.js';
import { pidAlive } from '../common/pid.js';
import { identityLine } from '../fs/file-identity.js';
import { privateAckDir, writeAckFile, type WrapperAcks } from '../worker/wrapper-acks.js';

// The acknowledgements the installed `walvault` bash script answers PostgreSQL from without starting
// Node (scripts/wrapper/push.bash, README "The shell fast path"); the context and the directory
// rules are shared with the prefetch side (src/worker/wrapper-acks.ts). Node's part is to write an
// acknowledgement only for bytes it stored, only for a file identity that stood still across the
// read (src/fs/file-identity.ts), and only into a directory that is this user's alone.

/** What a stored file contributes to its acknowledgement. */
export interface AckedFile {
  name: string;
  sha256: string;
  identity?: import('../fs/file-identity.js').FileIdentity;
}

/**
 * Writes `<dir>/push/<name>` for a file just stored (temp + rename; no fsync: a lost ack costs one
 * Node start). Skipped, never failing the upload, when the file's identity was not stable, the
 * directory is not private, or a field would break the line format.
 */
export async function writePushAck(
  acks: WrapperAcks,
  file: AckedFile,
  info: { repo: string; object: string | undefined; logLevel: string },
): Promise<void> {
  if (!file.identity) return;
  const fields = [info.repo, info.object ?? '-', info.logLevel];
  if (fields.some((f) => f === '' || /[\n\r]/.test(f))) return;
  try {
    const dir = privateAckDir(acks.dir, 'push');
    writeAckFile(dir, file.name, ['walvault-ack 1', file.name, identityLine(file.identity), file.sha256, ...fields, acks.context].join('\n') + '\n');
  } catch (e) {
    log.debug(`no shell fast path acknowledgement for ${file.name}: ${describe(e)}`);
  }
}

/** Removes acknowledgements of files PostgreSQL no longer lists as ready, keeping `keep`. Best effort. */
export async function pruneWrapperAcks(acks: WrapperAcks, stillReady: Set<string>, keep: Set<string> = new Set()): Promise<void> {
  const dir = join(acks.dir, 'push');
  for (const entry of await readdir(dir).catch(() => [] as string[])) {
    if (entry.startsWith('.')) {
      // A writer killed between write and rename leaves its temp file; a live writer's stays.
      const writer = Number(/\.(\d+)\.tmp$/.exec(entry)?.[1]);
      if (!(writer > 0 && pidAlive(writer))) await unlink(join(dir, entry)).catch(() => undefined);
    } else if (!stillReady.has(entry) && !keep.has(entry)) {
      await unlink(join(dir, entry)).catch(() => undefined);
    }
  }
}
