import type { LoadedConfig } from '../common/config.js';
import { checkFailedError } from '../common/errors.js';
import { formatBytes, log } from '../common/log.js';
import { openRepository } from '../archive/repository.js';
import { runVerify, type VerifyReport } from '../operate/verify.js';
import { describeRange } from '../operate/continuity.js';

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
  process.stdout.write(a.json ? JSON.stringify(report, null, 2) + '\n' : text(report));
  for (const p of report.problems) log.error(`problem: ${p}`);
  if (!report.ok) throw checkFailedError(`verify found ${report.problems.length} problem(s) in ${report.repository}`);
  return 0;
}

export function text(r: VerifyReport): string {
  const lines = [`verify ${r.repository}${r.deep ? ' --deep' : ''}`];
  for (const t of r.timelines) {
    const range = t.expected ? `${t.expected.first}..${t.expected.last} expected (${t.expected.count})` : 'nothing expected';
    const gaps = t.gaps.length ? `${t.gaps.length} gap(s): ${t.gaps.map(describeRange).join(', ')}` : 'no gaps';
    lines.push(`timeline ${t.timeline}: ${t.segments} segment(s) archived, ${range}, ${gaps}`);
  }
  for (const b of r.backups) lines.push(`backup ${b.id} (${b.type}): ${b.objects} object(s), ${b.walSegments} WAL segment(s) to consistency`);
  if (r.read) lines.push(`deep: ${r.read.read} object(s) read (${formatBytes(r.read.bytes)}), ${r.read.remembered} verified by an earlier run and unchanged`);
  for (const n of r.notes) lines.push(`note: ${n}`);
  lines.push(r.ok ? 'ok: no problems found' : `FAILED: ${r.problems.length} problem(s) (listed on stderr)`);
  return lines.join('\n') + '\n';
}
