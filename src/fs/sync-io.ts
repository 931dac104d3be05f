import { closeSync, constants, fsyncSync, openSync, readdirSync, writeSync } from 'node:fs';
import type { Config } from '../common/config.js';
import { formatLogLine } from '../common/log.js';
import { TEMP_MARK } from './temp-names.js';

// Synchronous, import-light helpers for the per-file fast paths (wal-push of a recorded file,
// wal-fetch from the prefetch spool): process.stderr costs a few milliseconds to set up on a pipe,
// so log lines (same format as src/common/log.ts) go out with writeSync, and fsync is synchronous.

/**
 * fsync of the directory a fast path just renamed a file into. O_DIRECTORY|O_NONBLOCK: a FIFO or a
 * device there fails at once instead of blocking the process. The last link is followed, like the
 * rename by path that came before (pg_wal may be a symbolic link).
 */
export function fsyncDirSync(dir: string): void {
  const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NONBLOCK);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** True when `dir` holds a walvault temp file (then the full cleanup is worth loading). */
export function hasTempFiles(dir: string): boolean {
  try {
    return readdirSync(dir).some((n) => n.startsWith(TEMP_MARK));
  } catch {
    return false;
  }
}

/** One log line in the format of src/common/log.ts, honouring the configured level. */
export function logLine(config: Config, command: string, level: 'info' | 'warn', message: string): void {
  if (level === 'info' && config.logLevel !== 'info' && config.logLevel !== 'debug') return;
  if (level === 'warn' && config.logLevel === 'error') return;
  try {
    writeSync(2, formatLogLine(command, level, message));
  } catch {
    // stderr closed: nothing to tell
  }
}
