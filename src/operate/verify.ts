import { join } from 'node:path';
import { retryPolicy, type Config } from '../common/config.js';
import { escapeControl } from '../common/control-chars.js';
import { Deadline } from '../common/retry.js';
import { repoCacheDir } from '../archive/cache-dir.js';
import { ensureDir } from '../fs/atomic.js';
import { writeJsonReplace } from '../fs/json-file.js';
import type { ListedObject, Storage } from '../storage/types.js';
import { hex8 } from '../wal/names.js';
import { describeRange, dropIsHarmless, readHistories, readMarks, segmentNames, segmentSizeOf, walContinuity, type Gap } from './continuity.js';
import { takeInventory } from './inventory.js';
import { checkBackups, type BackupSummary, type DeepTask, type Findings } from './verify-backups.js';
import { verifyDeep, type DeepCounts } from './verify-deep.js';
import { RESULT_FILE, VerifyMemory } from './verify-memory.js';

// walvault verify: is the repository whole? From one listing: WAL continuity per timeline, the
// maxReadyBytes gap markers, every backup's WAL and objects; with --deep every object read back.

export interface VerifyOptions {
  deep: boolean;
  full: boolean;
  jobs: number;
}

export interface VerifyReport {
  repository: string;
  time: string;
  ok: boolean;
  deep: boolean;
  problems: string[];
  notes: string[];
  timelines: Array<{ timeline: number; expected: { first: string; last: string; count: number } | null; segments: number; gaps: Gap[] }>;
  gapMarkers: string[];
  backups: BackupSummary[];
  read?: DeepCounts;
}

/** What verify-result.json holds (written by verify, read by info). */
export interface VerifyResult {
  time: string;
  ok: boolean;
  problems: number;
  deep: boolean;
}

export async function runVerify(storage: Storage, config: Config, opts: VerifyOptions): Promise<VerifyReport> {
  const policy = retryPolicy(config);
  const deadline = new Deadline(config.deadline * 1000);
  const findings: Findings = { problems: [], notes: [], tasks: new Map() };
  const time = new Date();
  let report: VerifyReport;
  try {
    const inv = await takeInventory(storage, { policy, deadline });
    const segSize = segmentSizeOf(inv);
    if (!inv.manifest) findings.notes.push('the repository has no walvault.json: nothing was ever archived here, or it was removed');
    const histories = await readHistories(storage, inv, { policy, deadline }, findings.problems);
    const marks = await readMarks(storage, inv, { policy, deadline }, findings.problems);
    const continuity = walContinuity(inv, histories, segSize, marks);
    for (const t of continuity) {
      if (t.tli > 1 && t.segments && !inv.histories.has(t.tli)) {
        findings.problems.push(`timeline ${t.tli} has archived WAL but no history file wal/${hex8(t.tli)}.history: recovery cannot follow it`);
      }
      for (const g of t.gaps) findings.problems.push(`timeline ${t.tli}: WAL ${describeRange(g)} missing`);
    }
    for (const m of inv.gapMarkers) {
      const what = `WAL from ${m.name} on was dropped by maxReadyBytes (marker ${m.key}, ${m.lastModified.toISOString()})`;
      if (dropIsHarmless(m.name, continuity, inv.backups, segSize)) findings.notes.push(`${what}, before the oldest backup: harmless`);
      else findings.problems.push(`${what}: point-in-time recovery across it is impossible; take a new backup`);
    }
    const segments = segmentNames(inv);
    const backups = await checkBackups(storage, inv, histories, segments, { policy, deadline }, findings);
    if (inv.other.length) findings.notes.push(foreignNote(inv.other));
    report = {
      repository: storage.url,
      time: time.toISOString(),
      ok: false,
      deep: opts.deep,
      problems: findings.problems,
      notes: findings.notes,
      timelines: continuity.map((t) => ({ timeline: t.tli, expected: t.expected ?? null, segments: t.segments, gaps: t.gaps })),
      gapMarkers: inv.gapMarkers.map((m) => m.name),
      backups,
    };
    if (opts.deep) {
      const cache = repoCacheDir(config.spool, storage.cacheKey);
      const memory = await VerifyMemory.load(cache);
      const tasks = deepTasks(inv.timelines.values(), inv.histories.values(), findings.tasks);
      report.read = await verifyDeep(storage, tasks, { ...opts, memory, manifest: inv.manifest, policy, deadlineMs: config.deadline * 1000 }, findings.problems);
      const listed: ListedObject[] = [...inv.timelines.values()].flatMap((t) => [...t.segments, ...t.partials, ...t.backupLabels]);
      listed.push(...inv.histories.values());
      for (const d of inv.backupDirs.values()) listed.push(...d.objects);
      await memory.save(listed);
    }
  } finally {
    deadline.dispose();
  }
  report.ok = report.problems.length === 0;
  await recordResult(config, storage, { time: report.time, ok: report.ok, problems: report.problems.length, deep: opts.deep });
  return report;
}

/** The note naming keys walvault does not know: the first few, as listed (escaped: anyone may name them). */
export function foreignNote(other: readonly ListedObject[]): string {
  const shown = other.slice(0, 5).map((o) => escapeControl(o.key)).join(', ');
  return `${other.length} object(s) walvault does not know (left alone): ${shown}${other.length > 5 ? ', ...' : ''}`;
}

/** Every WAL object (segments with their header check), then the backups' objects. */
function deepTasks(
  timelines: Iterable<{ segments: ListedObject[]; partials: ListedObject[]; backupLabels: ListedObject[] }>,
  histories: Iterable<ListedObject>,
  backups: Map<string, DeepTask>,
): DeepTask[] {
  const out: DeepTask[] = [];
  const name = (o: ListedObject) => o.key.slice(o.key.lastIndexOf('/') + 1, o.key.lastIndexOf('/') + 25);
  for (const t of timelines) {
    for (const o of [...t.segments, ...t.partials]) out.push({ object: o, segment: name(o) });
    for (const o of t.backupLabels) out.push({ object: o });
  }
  for (const o of histories) out.push({ object: o });
  out.push(...backups.values());
  return out;
}

async function recordResult(config: Config, storage: Storage, r: VerifyResult): Promise<void> {
  const dir = repoCacheDir(config.spool, storage.cacheKey);
  await ensureDir(dir);
  await writeJsonReplace(join(dir, RESULT_FILE), r);
}
