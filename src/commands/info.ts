import { printableJson } from '../common/control-chars.js';
import type { LoadedConfig } from '../common/config.js';
import { openRepository } from '../archive/repository.js';
import { gatherInfo, metricsOf, pictureOf, type InfoReport } from '../operate/info.js';
import { drawWindow } from '../operate/picture.js';
import { infoText } from '../operate/info-report.js';
import { formatMetrics, writeMetricsFile } from '../operate/prometheus.js';

// walvault info [--json] [--prometheus FILE] [--picture] [--dbname CONNINFO]: the recovery window
// per timeline, gaps, backups, archive lag; a picture on a terminal; metrics for node_exporter.
export async function info(loaded: LoadedConfig, a: { json: boolean; picture: boolean; prometheus?: string; dbname?: string }): Promise<number> {
  const storage = await openRepository(loaded.config);
  let report: InfoReport;
  try {
    report = await gatherInfo(storage, loaded.config, { ...(a.dbname !== undefined ? { dbname: a.dbname } : {}), env: process.env });
  } finally {
    storage.close();
  }
  if (a.prometheus) await writeMetricsFile(a.prometheus, formatMetrics(metricsOf(report)));
  if (a.json) {
    process.stdout.write(printableJson(report));
    return 0;
  }
  const tty = process.stdout.isTTY === true;
  const color = tty && !process.env['NO_COLOR'];
  process.stdout.write(infoText(report));
  if (tty || a.picture) {
    const width = Math.min(tty ? process.stdout.columns || 72 : 72, 200);
    for (const t of report.timelines) if (t.segments) process.stdout.write('\n' + drawWindow(pictureOf(report, t, width, color)).join('\n') + '\n');
  }
  return 0;
}
