import { printableJson } from '../common/control-chars.js';
import type { LoadedConfig } from '../common/config.js';
import { log } from '../common/log.js';
import { drillError, DrillFailure } from '../operate/drill-checks.js';
import { renderDrill } from '../operate/drill-report.js';
import { runRestoreDrill, type DrillOptions } from '../operate/restore-drill.js';

// walvault restore-test: the restore drill (operate/restore-drill.ts). Exit 0 when the backup
// restored, recovered, promoted and passed the checks; 15 (CheckFailed) naming the reason otherwise.
export async function restoreTest(loaded: LoadedConfig, opts: DrillOptions, json: boolean): Promise<number> {
  const { report, failure } = await runRestoreDrill(loaded, opts);
  process.stdout.write(json ? printableJson(report) : renderDrill(report));
  if (!failure) return 0;
  if (!(failure instanceof DrillFailure)) throw failure;
  // The server's log lines (when it stopped) one per line; the error line last.
  for (const l of failure.message.split('\n').slice(1)) log.warn(l.trim());
  throw drillError(failure);
}
