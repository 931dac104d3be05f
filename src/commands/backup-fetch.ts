import type { LoadedConfig } from '../common/config.js';
import { restoreBackup, type BackupFetchOptions } from '../backup/fetch.js';

// walvault backup-fetch <id|LATEST> <pgdata> [target]: the restore itself is backup/fetch.ts (shared
// with restore-test).
export async function backupFetch(loaded: LoadedConfig, opts: BackupFetchOptions): Promise<number> {
  return restoreBackup(loaded, opts);
}
