import type { LoadedConfig } from '../common/config.js';
import { escapeControl, printableJson } from '../common/control-chars.js';
import { checkFailedError } from '../common/errors.js';
import { log } from '../common/log.js';
import { openRepository } from '../archive/repository.js';
import { runVerify, type VerifyReport } from '../operate/verify.js';
import { verifyText } from '../operate/verify-report.js';

// walvault verify [--deep] [--full] [--json] [--jobs N]: exit 0 when the repository is whole, 15
// (CheckFailed) naming every problem (one line each on stderr) when it is not.
export async function verify(loaded: LoadedConfig, a: { deep: boolean; full: boolean; json: boolean }): Promise<number> {
  const { config } = loaded;
  // --jobs is the global backupJobs setting (default: CPU cores); reading a repository wants 4 unless told.
  const jobs = loaded.sources['backupJobs']?.source === 'default' ? 4 : (config.backupJobs ?? 4);
  const storage = await openRepository(config);
  let report: VerifyReport;
  try {
    report = await runVerify(storage, config, { deep: a.deep || a.full, full: a.full, jobs });
  } finally {
    storage.close();
  }
  process.stdout.write(a.json ? printableJson(report) : verifyText(report));
  for (const p of report.problems) log.error(escapeControl(`problem: ${p}`));
  if (!report.ok) throw checkFailedError(`verify found ${report.problems.length} problem(s) in ${report.repository}`);
  return 0;
}
