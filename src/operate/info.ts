import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { retryPolicy, type Config } from '../common/config.js';
import { log } from '../common/log.js';
import { Deadline } from '../common/retry.js';
import { repoCacheDir } from '../archive/cache-dir.js';
import type { Storage } from '../storage/types.js';
import { segmentNumber } from '../wal/names.js';
import { readArchiver, wantsConnection, type ArchiverState } from './archiver.js';
import { presentOnPath, readHistories, readMarks, segmentNames, segmentSizeOf, walContinuity } from './continuity.js';
import { takeInventory } from './inventory.js';
import type { PictureInput } from './picture.js';
import type { MetricsInput } from './prometheus.js';
import { RESULT_FILE } from './verify-memory.js';
import type { VerifyResult } from './verify.js';
import { recoveryWindow } from './window.js';

// walvault info: what can be restored, per timeline (the recovery window, cut by gaps), the backups,
// the maxReadyBytes drops, and with a connection how far archiving lags behind the server.

export interface InfoGap {
  first: string;
  last: string;
  count: number;
  /** When the segments around the gap were stored (the gap lies in between). */
  from?: string;
  to?: string;
}

export interface InfoTimeline {
  timeline: number;
  parent?: { tli: number; switchLsn: string };
  segments: number;
  first?: { segment: string; time: string };
  newest?: { segment: string; time: string };
  window: { start: { backup: string; time: string; lsn: string }; end: { segment: string; time: string } } | null;
  gaps: InfoGap[];
  backups: string[];
}

export interface InfoReport {
  repository: string;
  now: string;
  timelines: InfoTimeline[];
  backups: Array<{
    id: string;
    type: 'full' | 'incremental';
    reference?: string;
    timeline: number;
    startTime: string;
    stopTime: string;
    stopLsn: string;
    sizeBytes: number;
    storedBytes: number;
    ageSeconds: number;
  }>;
  gapMarkers: Array<{ segment: string; time: string }>;
  archiver?: ArchiverState | { error: string };
  verify: VerifyResult | null;
}

export async function gatherInfo(storage: Storage, config: Config, opts: { dbname?: string; env: NodeJS.ProcessEnv }): Promise<InfoReport> {
  const policy = retryPolicy(config);
  const deadline = new Deadline(config.deadline * 1000);
  const now = new Date();
  try {
    const inv = await takeInventory(storage, { policy, deadline });
    const segSize = segmentSizeOf(inv);
    const problems: string[] = [];
    const histories = await readHistories(storage, inv, { policy, deadline }, problems);
    const marks = await readMarks(storage, inv, { policy, deadline }, problems);
    for (const p of problems) log.warn(p);
    const names = segmentNames(inv);
    const continuity = walContinuity(inv, histories, segSize, marks);
    const timelines = continuity.map((c): InfoTimeline => {
      const segs = inv.timelines.get(c.tli)?.segments ?? [];
      const w = recoveryWindow(inv, histories.get(c.tli) ?? [], continuity, names, segSize, c.tli);
      const at = (n: bigint) => presentOnPath(names, w.path, n, segSize)?.lastModified.toISOString();
      // Its own gaps and those on its ancestors that cut its window (the same gaps verify reports).
      const gaps = new Map([...w.gaps, ...c.gaps].map((g) => [g.first, g]));
      return {
        timeline: c.tli,
        ...(c.parent ? { parent: c.parent } : {}),
        segments: segs.length,
        ...(segs.length ? { first: { segment: segs[0]!.name, time: segs[0]!.lastModified.toISOString() } } : {}),
        ...(c.newest ? { newest: { segment: c.newest.name, time: c.newest.lastModified.toISOString() } } : {}),
        window: w.start && w.end ? { start: w.start, end: w.end } : null,
        gaps: [...gaps.values()]
          .sort((x, y) => Number(segmentNumber(x.first, segSize) - segmentNumber(y.first, segSize)))
          .map((g) => {
            const from = at(segmentNumber(g.first, segSize) - 1n);
            const to = at(segmentNumber(g.last, segSize) + 1n);
            return { ...g, ...(from ? { from } : {}), ...(to ? { to } : {}) };
          }),
        backups: w.backups.map((b) => b.id),
      };
    });
    const report: InfoReport = {
      repository: storage.url,
      now: now.toISOString(),
      timelines,
      backups: inv.backups.map((b) => ({
        id: b.id,
        type: b.type ?? 'full',
        ...(b.reference ? { reference: b.reference } : {}),
        timeline: b.timeline,
        startTime: b.startTime,
        stopTime: b.stopTime,
        stopLsn: b.stopLsn,
        sizeBytes: b.sizeBytes,
        storedBytes: b.storedBytes,
        ageSeconds: Math.max(0, Math.floor((now.getTime() - Date.parse(b.stopTime)) / 1000)),
      })),
      gapMarkers: inv.gapMarkers.map((m) => ({ segment: m.name, time: m.lastModified.toISOString() })),
      verify: await readVerifyResult(config, storage),
    };
    if (wantsConnection(opts.dbname, opts.env)) {
      try {
        report.archiver = await readArchiver(opts.dbname, opts.env);
      } catch (e) {
        const error = e instanceof Error ? e.message : String(e);
        log.warn(`no archiver state: ${error}`);
        report.archiver = { error };
      }
    }
    return report;
  } finally {
    deadline.dispose();
  }
}

async function readVerifyResult(config: Config, storage: Storage): Promise<VerifyResult | null> {
  try {
    const x = JSON.parse(await readFile(join(repoCacheDir(config.spool, storage.cacheKey), RESULT_FILE), 'utf8')) as Partial<VerifyResult>;
    if (typeof x.time !== 'string' || !Number.isFinite(Date.parse(x.time)) || typeof x.ok !== 'boolean') return null;
    return { time: x.time, ok: x.ok, problems: Number(x.problems) || 0, deep: x.deep === true };
  } catch {
    return null;
  }
}

/** The picture's input for one timeline of a report. */
export function pictureOf(r: InfoReport, t: InfoTimeline, width: number, color: boolean): PictureInput {
  const byId = new Map(r.backups.map((b) => [b.id, b]));
  return {
    tli: t.timeline,
    now: new Date(r.now),
    width,
    color,
    backups: t.backups.map((id) => byId.get(id)!).map((b) => ({ time: new Date(b.stopTime), type: b.type })),
    wal: t.first && t.newest ? { first: new Date(t.first.time), last: new Date(t.newest.time) } : null,
    gaps: t.gaps.flatMap((g) => {
      const from = g.from ?? g.to;
      const to = g.to ?? g.from;
      return from && to ? [{ from: new Date(from), to: new Date(to) }] : [];
    }),
    window: t.window ? { start: new Date(t.window.start.time), end: new Date(t.window.end.time) } : null,
  };
}

/** The metrics of a report (the window of the newest timeline that has one). */
export function metricsOf(r: InfoReport): MetricsInput {
  const newest = r.timelines
    .flatMap((t) => (t.newest ? [t.newest] : []))
    .sort((a, b) => Date.parse(b.time) - Date.parse(a.time))[0];
  const lastBackup = [...r.backups].sort((a, b) => Date.parse(b.stopTime) - Date.parse(a.stopTime))[0];
  const window = [...r.timelines].reverse().find((t) => t.window)?.window;
  const archiver = r.archiver && 'failedCount' in r.archiver ? r.archiver : undefined;
  return {
    repository: r.repository,
    now: new Date(r.now),
    ...(newest ? { lastSegment: { time: new Date(newest.time) } } : {}),
    ...(lastBackup ? { lastBackup: { time: new Date(lastBackup.stopTime), sizeBytes: lastBackup.sizeBytes, storedBytes: lastBackup.storedBytes } } : {}),
    ...(window ? { windowStart: new Date(window.start.time) } : {}),
    // A gap on a parent is also listed under each child whose window it cuts: counted once.
    gaps: new Set(r.timelines.flatMap((t) => t.gaps.map((g) => g.first))).size,
    backups: { full: r.backups.filter((b) => b.type === 'full').length, incremental: r.backups.filter((b) => b.type === 'incremental').length },
    ...(r.verify ? { verify: { time: new Date(r.verify.time), ok: r.verify.ok } } : {}),
    ...(archiver ? { archiverFailedCount: archiver.failedCount } : {}),
  };
}
