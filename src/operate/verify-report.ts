import { formatBytes } from '../common/log.js';
import { describeRange } from './continuity.js';
import type { VerifyReport } from './verify.js';

// verify's human-readable report (stdout without --json); the problems themselves go to stderr.

export function verifyText(r: VerifyReport): string {
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
