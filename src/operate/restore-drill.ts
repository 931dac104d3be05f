import { execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { resolve } from 'node:path';
import type { LoadedConfig } from '../common/config.js';
import { checkFailedError, describe as describeError, isWalvaultError, localWriteError, usageError } from '../common/errors.js';
import type { Owner } from '../common/file-trust.js';
import { log } from '../common/log.js';
import { parseFetchRequest, resolveOwner, restoreBackup, type RestoreOutcome } from '../backup/fetch.js';
import { findPgProgram } from '../backup/pgbin.js';
import { describeTarget, type TargetFlags } from '../backup/target.js';
import { DrillFailure, runAmcheck, runSql, waitRecovered, type AmcheckResult, type Recovered, type SqlResult } from './drill-checks.js';
import { makeDrillDir, removeDrillDir, startDrillServer, stopDrillServer, stopLeftovers, type DrillDir, type DrillServer } from './drill-server.js';

// walvault restore-test: the restore drill. Restores the backup a target needs (LATEST by default)
// into a new scratch directory, starts PostgreSQL there (drill-server.ts: loopback, archiving off),
// waits until recovery has ended and the server promoted, runs pg_amcheck and the operator's SQL,
// then stops the server and removes everything, on every path (signals too). The time of each
// phase is the measured recovery time (RTO) of this repository on this machine.

export interface DrillOptions extends TargetFlags {
  backup?: string;
  targetTimeline?: string;
  sql?: string;
  dir?: string;
  owner?: string;
  database?: string;
  keepFailed?: boolean;
  /** Seconds allowed for recovery (and for each check). */
  timeout: number;
}

export interface DrillReport {
  ok: boolean;
  reason?: string;
  problems: string[];
  backup: { id: string; format: 1 | 2; type: string; stopTime: string; stopLsn: string } | null;
  target: string;
  wal: { firstSegment: string; lastSegment: string; segments: number; timelines: number[] } | null;
  download: { bytes: number; objects: number; files: number; bytesPerSecond: number } | null;
  recovery: { replayLsn: string | null; replayTime: string | null; timeline: number } | null;
  amcheck: AmcheckResult | null;
  sql: SqlResult | null;
  /** Seconds of each phase: the RTO. */
  phases: { restore: number | null; replay: number | null; checks: number | null; total: number };
  directory: string | null;
  kept: boolean;
}

/** Failures that mean the drill could not even run (bad flags, config, store down) keep their own exit code. */
const OWN_CODE = new Set(['UsageError', 'ConfigError', 'AccessDenied', 'StorageUnavailable', 'StorageError', 'MissingBucket']);

export function keepsOwnCode(e: unknown): boolean {
  return isWalvaultError(e) && OWN_CODE.has(e.code);
}

/** As root: the owner of the restored files and the server (default postgres). Else undefined (this user). */
function drillOwner(spec: string | undefined): { owner: Owner | undefined; spec: string | undefined; name: string } {
  if (process.getuid?.() !== 0) {
    resolveOwner(spec, false); // refuses another user
    return { owner: undefined, spec: undefined, name: userInfo().username };
  }
  const given = spec ?? 'postgres';
  let owner: Owner | undefined;
  try {
    owner = resolveOwner(given, true);
  } catch (e) {
    if (spec !== undefined) throw e;
    throw usageError('restore-test runs PostgreSQL, which refuses to run as root, and there is no user postgres here: pass --owner <user> (the restored files and the server run as that user)');
  }
  if (!owner || owner.uid === 0) throw usageError('--owner must not be root: PostgreSQL refuses to run as root');
  let name = given;
  try {
    name = execFileSync('id', ['-nu', String(owner.uid)], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim() || given;
  } catch {
    // a uid without a name: the role is tried by the given spelling, then postgres
  }
  return { owner, spec: given, name };
}

export async function runRestoreDrill(loaded: LoadedConfig, opts: DrillOptions): Promise<{ report: DrillReport; failure?: DrillFailure | Error }> {
  const started = performance.now();
  const which = opts.backup ?? 'LATEST';
  const { target } = parseFetchRequest({ ...opts, which });
  if (!(opts.timeout > 0)) throw usageError(`--timeout must be a positive number of seconds, got ${opts.timeout}`);
  const { owner, spec, name } = drillOwner(opts.owner);
  let sqlText: string | undefined;
  if (opts.sql !== undefined) {
    sqlText = await readFile(opts.sql, 'utf8').catch((e: unknown) => {
      throw usageError(`--sql ${opts.sql}: cannot read it: ${describeError(e)}`);
    });
  }
  const timeoutMs = opts.timeout * 1000;
  const report: DrillReport = {
    ok: false,
    problems: [],
    backup: null,
    target: describeTarget(target),
    wal: null,
    download: null,
    recovery: null,
    amcheck: null,
    sql: null,
    phases: { restore: null, replay: null, checks: null, total: 0 },
    directory: null,
    kept: false,
  };
  const stop = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    log.warn(`received ${sig}: stopping the drill and removing what it made`);
    stop.abort(sig);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let d: DrillDir | undefined;
  let server: DrillServer | undefined;
  let failure: DrillFailure | Error | undefined;
  const secs = (from: number) => Math.round(performance.now() - from) / 1000;
  try {
    const base = resolve(opts.dir ?? tmpdir());
    d = await makeDrillDir(base, owner).catch((e: unknown) => {
      throw isWalvaultError(e) ? e : localWriteError(`cannot make the scratch directory in ${base} (--dir): ${describeError(e)}`);
    });
    report.directory = d.dir;
    log.info(`restore-test in ${d.dir}`);
    // 1. Restore (backup-fetch's own checks: WAL coverage first, then download, pg_verifybackup).
    let t = performance.now();
    let outcome: RestoreOutcome;
    try {
      outcome = await restoreBackup(loaded, {
        which,
        pgdata: d.pgdata,
        ...pick(opts, ['targetTime', 'targetLsn', 'targetXid', 'targetName', 'targetImmediate', 'targetTimeline']),
        ...(spec !== undefined ? { owner: spec } : {}),
        ...(target.kind !== 'none' ? { targetAction: 'promote' } : {}),
        tablespaceBase: d.tablespaces,
        command: 'restore-test',
      });
    } catch (e) {
      if (keepsOwnCode(e) || stop.signal.aborted) throw e;
      const missing = /lacks WAL segment/.test(describeError(e));
      throw new DrillFailure(missing ? 'missing WAL' : 'restore failed', describeError(e));
    }
    report.phases.restore = secs(t);
    const plan = outcome.plan;
    const b = plan.backup;
    report.backup = { id: b.id, format: b.format, type: b.type ?? 'full', stopTime: b.stopTime, stopLsn: b.stopLsn };
    report.wal = { firstSegment: plan.wal.firstSegment, lastSegment: plan.wal.lastSegment, segments: plan.wal.segments, timelines: plan.wal.path.map((p) => p.tli) };
    report.download = { bytes: plan.downloadBytes, objects: plan.objects, files: plan.fileCount, bytesPerSecond: Math.round(plan.downloadBytes / (outcome.restoreMs / 1000)) };
    if (stop.signal.aborted) throw new DrillFailure('interrupted', `interrupted by ${String(stop.signal.reason)}`);

    // 2. Replay to the end of the archive (or the target) and promotion.
    t = performance.now();
    const postgres = findPgProgram('postgres', loaded.config.pgBinDir, b.pgVersion);
    if (!postgres) throw new DrillFailure('server did not start', `no postgres program of PostgreSQL ${b.pgVersion || '(unknown version)'} here: install it or set pgBinDir`);
    server = await startDrillServer(postgres, d);
    log.info(`started ${postgres} (pid ${server.child.pid}) on 127.0.0.1:${server.port}, socket in ${d.dir}; waiting for recovery to end (at most ${opts.timeout} s)`);
    const conn = { d, server, database: opts.database ?? 'postgres' };
    const users = [...new Set([name, 'postgres'])];
    const rec: Recovered = await waitRecovered(conn, users, timeoutMs, stop.signal);
    report.phases.replay = secs(t);
    report.recovery = { replayLsn: rec.replayLsn, replayTime: rec.replayTime, timeline: rec.timeline };
    log.info(`recovery ended at ${rec.replayLsn ?? '?'} (last transaction ${rec.replayTime ?? 'none replayed'}); promoted to timeline ${rec.timeline}`);

    // 3. Checks.
    t = performance.now();
    report.amcheck = await runAmcheck(conn, findPgProgram('pg_amcheck', loaded.config.pgBinDir, b.pgVersion), rec.user, timeoutMs, stop.signal);
    if (stop.signal.aborted) throw new DrillFailure('interrupted', `interrupted by ${String(stop.signal.reason)}`);
    if (opts.sql !== undefined) report.sql = await runSql(conn, opts.sql, sqlText!, rec.user, timeoutMs);
    report.phases.checks = secs(t);
    report.ok = true;
  } catch (e) {
    if (stop.signal.aborted && !(e instanceof DrillFailure && e.reason === 'interrupted')) failure = new DrillFailure('interrupted', `interrupted by ${String(stop.signal.reason)}: ${describeError(e)}`);
    else failure = e as Error;
  } finally {
    try {
      if (server) await stopDrillServer(server);
      if (d) {
        const left = await stopLeftovers(d);
        if (left > 0) log.info(`stopped ${left} leftover process(es) of the drill (wal-fetch prefetch)`);
        if (failure && opts.keepFailed) {
          report.kept = true;
          log.warn(`--keep-failed: left ${d.dir} for inspection (the server is stopped; its log is ${d.logFile}); remove it yourself`);
          await d.log.close().catch(() => undefined);
        } else {
          await removeDrillDir(d);
        }
      }
    } catch (e) {
      failure ??= checkFailedError(`restore-test could not clean up${d ? ` ${d.dir}` : ''}: ${describeError(e)}`);
      log.error(`restore-test could not clean up${d ? ` ${d.dir}` : ''}: ${describeError(e)}`);
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  }
  report.phases.total = secs(started);
  if (failure) {
    report.ok = false;
    if (failure instanceof DrillFailure) report.reason = failure.reason;
    report.problems.push(describeError(failure));
  }
  return { report, ...(failure ? { failure } : {}) };
}

function pick<T extends object, K extends keyof T>(o: T, keys: K[]): Partial<Pick<T, K>> {
  const out: Partial<Pick<T, K>> = {};
  for (const k of keys) if (o[k] !== undefined) out[k] = o[k];
  return out;
}
