import { access, constants, open, realpath } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../common/config.js';
import { describe as describeError } from '../common/errors.js';
import { openBackupSession } from './pg-session.js';

// backup-push without --method: files (format 2, parallel, bounded memory) whenever this process can
// read the server's own data directory, else stream (pg_basebackup over the replication protocol,
// which works from any host). "The server's own" is proven by pg_control's system identifier: a
// directory at the same path on this host may belong to another cluster (a container, a restored
// copy), and reading it would back up the wrong database.

export type BackupMethod = 'files' | 'stream';

export interface MethodChoice {
  method: BackupMethod;
  /** Why: for the info line. */
  reason: string;
}

export async function chooseBackupMethod(config: Config, dbname: string | undefined, signal?: AbortSignal): Promise<MethodChoice> {
  let dataDirectory: string;
  let systemIdentifier: string;
  try {
    const session = await openBackupSession(config, dbname, signal ? { signal } : {});
    ({ dataDirectory, systemIdentifier } = session);
    await session.close();
  } catch (e) {
    signal?.throwIfAborted();
    // e.g. a user with only the REPLICATION attribute: pg_basebackup works, SHOW data_directory does not.
    return { method: 'stream', reason: `the server's data directory could not be asked over SQL (${describeError(e)})` };
  }
  const local = await localSystemIdentifier(dataDirectory);
  if (typeof local !== 'string') return { method: 'stream', reason: `the server's data directory ${dataDirectory} is not readable here (${local.error})` };
  if (local !== systemIdentifier) {
    return { method: 'stream', reason: `${dataDirectory} here holds another cluster (system identifier ${local}, the server's is ${systemIdentifier})` };
  }
  return { method: 'files', reason: `the server's data directory ${dataDirectory} is readable here` };
}

/** pg_control's system identifier (its first 8 bytes, little-endian as written on this host), or why it cannot be read. */
export async function localSystemIdentifier(dataDirectory: string): Promise<string | { error: string }> {
  try {
    const dir = await realpath(dataDirectory);
    // The walk needs to list directories, not only to open pg_control.
    await access(dir, constants.R_OK | constants.X_OK);
    const fh = await open(join(dir, 'global', 'pg_control'), 'r');
    try {
      const head = Buffer.alloc(8);
      const { bytesRead } = await fh.read(head, 0, 8, 0);
      if (bytesRead < 8) return { error: 'global/pg_control is too short' };
      return head.readBigUInt64LE(0).toString();
    } finally {
      await fh.close();
    }
  } catch (e) {
    return { error: (e as NodeJS.ErrnoException).code ?? describeError(e) };
  }
}
