import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { repoCacheDir } from '../archive/cache-dir.js';
import type { Config } from '../common/config.js';
import { describe as describeError } from '../common/errors.js';
import { log } from '../common/log.js';
import { writeJsonReplace } from '../fs/json-file.js';
import { repoKeyOf, storageUrlOf } from '../storage/open.js';

// The restore speed last measured against this repository (backup-fetch and restore-test write it,
// in the repository's spool directory), from which backup-fetch --dry-run estimates how long a
// restore will take. Bytes are what the store holds (compressed); the time is the whole restore
// phase (download, decompress, write, pg_verifybackup), so bytes / rate estimates that phase.

export const THROUGHPUT_FILE = 'restore-throughput.json';

export interface RestoreThroughput {
  bytesPerSecond: number;
  bytes: number;
  seconds: number;
  measuredAt: string;
  backup: string;
  command: string;
}

function throughputPath(config: Pick<Config, 'spool' | 'repo' | 's3Endpoint' | 's3Profile'>): string {
  return join(repoCacheDir(config.spool, repoKeyOf(config) ?? storageUrlOf(config.repo)), THROUGHPUT_FILE);
}

/** Records a measurement; a spool that cannot be written costs only the estimate (a warning). */
export async function recordThroughput(config: Config, m: { bytes: number; ms: number; backup: string; command: string }): Promise<RestoreThroughput | undefined> {
  if (!(m.bytes > 0 && m.ms > 0)) return undefined;
  const value: RestoreThroughput = {
    bytesPerSecond: Math.round((m.bytes * 1000) / m.ms),
    bytes: m.bytes,
    seconds: m.ms / 1000,
    measuredAt: new Date().toISOString(),
    backup: m.backup,
    command: m.command,
  };
  const path = throughputPath(config);
  try {
    await mkdir(join(path, '..'), { recursive: true, mode: 0o700 });
    await writeJsonReplace(path, value);
  } catch (e) {
    log.warn(`cannot record the restore throughput in ${path}: ${describeError(e)}`);
  }
  return value;
}

/** The last measurement, or undefined when there is none (or it is unreadable: it is only an estimate). */
export async function readThroughput(config: Config): Promise<RestoreThroughput | undefined> {
  try {
    const x = JSON.parse(await readFile(throughputPath(config), 'utf8')) as Partial<RestoreThroughput>;
    if (typeof x.bytesPerSecond !== 'number' || !(x.bytesPerSecond > 0) || typeof x.measuredAt !== 'string') return undefined;
    return x as RestoreThroughput;
  } catch {
    return undefined;
  }
}
