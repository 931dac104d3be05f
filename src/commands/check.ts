import type { LoadedConfig } from '../common/config.js';
import { checkOutcome, formatJson, formatText } from '../operate/check-report.js';
import { runCheck } from '../operate/check.js';

// walvault check [--pg] [--json]: one line per probe on stdout (or one JSON document); exit 15
// (CheckFailed) when a probe failed, 4 (ConfigError) when the configuration cannot be used at all.
export async function check(loaded: LoadedConfig, opts: { pg: boolean; json: boolean; dbname?: string }): Promise<number> {
  const started = new Date();
  const { repo, probes } = await runCheck(loaded, { pg: opts.pg, ...(opts.dbname !== undefined ? { dbname: opts.dbname } : {}) });
  process.stdout.write(opts.json ? formatJson(repo, probes, started) : formatText(probes));
  const failure = checkOutcome(probes);
  if (failure) throw failure;
  return 0;
}
