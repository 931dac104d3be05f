import { backupError, describe as describeError } from '../common/errors.js';
import { retryPolicy, type Config } from '../common/config.js';
import { log } from '../common/log.js';
import { Deadline, withRetry } from '../common/retry.js';
import { readRemoteManifest } from '../archive/manifest.js';
import type { RepoManifest } from '../archive/manifest-parse.js';
import type { Storage } from '../storage/types.js';
import { parseWalName, walObjectKey } from '../wal/names.js';
import { readObjectText } from './catalog.js';
import { parseBackupLabel, type BackupLabel } from './label.js';

// backup-push's waiting: each storage step retried within the configured deadline (phase), and the
// polls, bounded by backupWaitTimeout, for walvault.json and for the WAL that ends the backup.

/** One storage step, retried per the config's retry policy within one deadline. */
export async function phase<T>(config: Config, what: string, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const deadline = new Deadline(config.deadline * 1000);
  try {
    return await withRetry(what, retryPolicy(config), deadline, fn);
  } finally {
    deadline.dispose();
  }
}

/** `p`, or 'timeout' if it has not settled within `ms` (the timer does not keep the process alive). */
export function within<T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => {
    t = setTimeout(() => resolve('timeout'), ms);
    t.unref();
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    }, { once: true });
  });

export async function waitForRepoManifest(storage: Storage, config: Config, signal: AbortSignal): Promise<RepoManifest> {
  const until = Date.now() + config.backupWaitTimeout * 1000;
  for (let delay = 500; ; delay = Math.min(delay * 2, 5000)) {
    const m = await phaseManifest(storage, config);
    if (m) return m;
    if (signal.aborted) throw signal.reason;
    if (Date.now() >= until) {
      throw backupError(
        `${storage.url} has no walvault.json: no WAL has ever been archived there. Set archive_command = 'walvault wal-push %p %f' ` +
          'on this cluster (same repository) before taking backups',
      );
    }
    await sleep(delay, signal);
  }
}

export async function phaseManifest(storage: Storage, config: Config): Promise<RepoManifest | null> {
  const deadline = new Deadline(config.deadline * 1000);
  try {
    return await readRemoteManifest(storage, retryPolicy(config), deadline);
  } finally {
    deadline.dispose();
  }
}

/**
 * Polls until the segment holding the stop LSN (and the backup history file, for a backup taken
 * from a primary) is archived, at most backupWaitTimeout. Returns the parsed history file if found.
 */
export async function waitForWal(
  storage: Storage,
  config: Config,
  stopSegment: string,
  historyName: string | undefined,
  signal: AbortSignal,
): Promise<BackupLabel | undefined> {
  const started = Date.now();
  const until = started + config.backupWaitTimeout * 1000;
  const segKey = walObjectKey(parseWalName(stopSegment));
  const histKey = historyName ? walObjectKey(parseWalName(historyName)) : undefined;
  let segDone = false;
  let history: BackupLabel | undefined;
  let histDone = histKey === undefined;
  let announced = false;
  for (let delay = 250; ; delay = Math.min(delay * 2, 5000)) {
    if (!segDone) segDone = (await phase(config, `head ${segKey}`, (s) => storage.head(segKey, { signal: s }))) !== null;
    if (!histDone && histKey) {
      const text = await phase(config, `read ${histKey}`, (s) => readObjectText(storage, histKey, s));
      if (text !== null) {
        histDone = true;
        try {
          history = parseBackupLabel(text, historyName);
        } catch (e) {
          log.warn(`cannot read the backup history file ${historyName}: ${describeError(e)}`);
        }
      }
    }
    if (segDone && histDone) {
      log.info(`WAL segment ${stopSegment} that ends the backup is archived${announced ? ` (after ${((Date.now() - started) / 1000).toFixed(1)} s)` : ''}`);
      return history;
    }
    if (signal.aborted) throw signal.reason;
    if (Date.now() >= until) {
      if (segDone) {
        log.warn(`the backup history file ${historyName} did not appear in ${storage.url}; using walvault's clock for the stop time`);
        return undefined;
      }
      throw backupError(
        `WAL segment ${stopSegment}, which holds the end of the backup, was not archived to ${storage.url} within ${config.backupWaitTimeout}s ` +
          '(backupWaitTimeout): is archive_command walvault wal-push with this repository, and is archiving keeping up? The backup is not usable without it and was not recorded',
      );
    }
    if (!announced) {
      log.info(`waiting for WAL segment ${stopSegment} to be archived (at most ${config.backupWaitTimeout}s)`);
      announced = true;
    }
    await sleep(delay, signal);
  }
}
