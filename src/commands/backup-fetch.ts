import type { LoadedConfig } from '../common/config.js';
import { usageError } from '../common/errors.js';
import { restoreBackup, type BackupFetchOptions } from '../backup/fetch.js';
import { showFetchPlan } from '../operate/pitr-plan.js';

// walvault backup-fetch <id|LATEST> <pgdata> [target]: the restore itself is backup/fetch.ts (shared
// with restore-test); --dry-run only shows the plan (operate/pitr-plan.ts) and never looks at <pgdata>.
export async function backupFetch(loaded: LoadedConfig, opts: Omit<BackupFetchOptions, 'pgdata'> & { pgdata?: string; dryRun?: boolean; json?: boolean }): Promise<number> {
  if (opts.dryRun) return showFetchPlan(loaded.config, opts, opts.json === true);
  if (opts.json) throw usageError('--json goes with --dry-run (a restore prints its progress on stderr)');
  if (opts.pgdata === undefined) throw usageError('backup-fetch needs the data directory to restore into (only --dry-run goes without one)');
  await restoreBackup(loaded, { ...opts, pgdata: opts.pgdata });
  return 0;
}
