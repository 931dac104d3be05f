import { createHash } from 'node:crypto';
import { backupError, isWalvaultError, rewordError } from '../common/errors.js';
import type { Owner } from '../common/file-trust.js';
import { log } from '../common/log.js';
import { wipe } from './restore-data.js';
import { checkTargetDir, planTarget, takeTargetDir, type TargetPlan, type TargetState } from './restore-target.js';
import { parseRecord, RECORD_NAME } from './restore-record.js';
import { removeAsOwner } from './restore-sink.js';
import { needsWorker, sha256AsOwner, startWorker, writeAsOwner } from './restore-worker.js';
import { TABLESPACE_MAP, tablespaceMapText, type TablespacePlan } from './tablespaces.js';

// The directories backup-fetch writes under, each created or taken by the same rules: the data
// directory and, for a backup with tablespaces, each tablespace's location. Run as root, the way
// to each is checked first (restore-target.ts) and what is found there is looked at by root only
// where root alone controls it, else by the owner's worker (restore-worker.ts).

export interface RestoreRoot {
  plan: TargetPlan;
  /** The directory did not exist: backup-fetch creates it, and removes it after a failure. */
  created: boolean;
  /** The progress record of an interrupted restore it holds (restore-record.ts), else null. */
  record: string | null;
}

/**
 * Checks `given` for `owner` (undefined: this process's own user) without writing anything: new
 * (its parent exists), empty or holding an interrupted restore, else a BackupError (`delta`: an
 * existing directory, whatever it holds). `isRoot`: this process runs as root.
 */
export async function locateRoot(given: string, owner: Owner | undefined, isRoot = process.getuid?.() === 0, delta = false): Promise<RestoreRoot> {
  if (!isRoot) return { plan: { pgdata: given, ownerHoldsParent: false }, ...(await checkTargetDir(given, true, delta)) };
  const worker = needsWorker(owner) ? owner : undefined;
  const plan = planTarget(given, worker);
  const state =
    worker && plan.ownerHoldsParent
      ? targetState(await startWorker('check', plan.pgdata, worker, delta ? 'delta' : undefined).done)
      : await checkTargetDir(plan.pgdata, true, delta);
  return { plan, ...state };
}

function targetState(r: Record<string, unknown>): TargetState {
  return { created: r['created'] === true, record: typeof r['record'] === 'string' ? r['record'] : null };
}

/** Creates (or takes) the directory for `owner`: by root only where root alone controls its parent. */
export async function prepareRoot(root: RestoreRoot, owner: Owner | undefined): Promise<void> {
  if (needsWorker(owner) && root.plan.ownerHoldsParent) await startWorker('take', root.plan.pgdata, owner, root.created ? 'new' : 'existing').done;
  else await takeTargetDir(root.plan.pgdata, root.created, needsWorker(owner) ? owner : undefined);
}

export interface TablespaceRoots {
  list: TablespacePlan[];
  roots: RestoreRoot[];
}

/**
 * Checks every location like the data directory (new, or empty; refused otherwise), writing nothing.
 * `resuming`: the data directory holds an interrupted restore of `backup`; a location may then hold
 * that restore's progress record too (what was done there).
 */
export async function locateTablespaces(list: TablespacePlan[], owner: Owner | undefined, backup: string, resuming: boolean): Promise<TablespaceRoots> {
  const roots: RestoreRoot[] = [];
  for (const t of list) {
    const r = await locateRoot(t.location!, owner).catch((e: unknown) => {
      throw isWalvaultError(e) && e.code === 'BackupError'
        ? rewordError(e, `tablespace ${t.oid}: ${e.message}; or restore it elsewhere with --tablespace-map ${t.oid}=<dir>`, { retryable: false })
        : e;
    });
    // planTarget resolved the parent's links: from here on the real path.
    t.location = r.plan.pgdata;
    if (r.record !== null) {
      const record = parseRecord(r.record, `${t.location}/${RECORD_NAME}`);
      if (!resuming || record.backup !== backup) {
        throw backupError(
          `tablespace ${t.oid}: ${t.location} holds an interrupted restore of backup ${record.backup}${resuming ? '' : ' but the data directory does not'}; ` +
            'empty it, or restore the tablespace elsewhere with --tablespace-map',
        );
      }
      t.done = record.done;
    }
    roots.push(r);
  }
  return { list, roots };
}

export async function prepareTablespaces(ts: TablespaceRoots, owner: Owner | undefined): Promise<void> {
  for (const r of ts.roots) await prepareRoot(r, owner);
}

/** Once the restore is complete and verified: the locations' progress records go (the data directory's first). */
export async function removeTablespaceRecords(ts: TablespaceRoots, owner: Owner | undefined): Promise<void> {
  for (const t of ts.list) await removeAsOwner(t.location!, owner, [RECORD_NAME]);
}

/** What pg_verifybackup is told to ignore: the progress records, still there while it runs. */
export function tablespaceRecordPaths(ts: TablespaceRoots): string[] {
  return ts.list.map((t) => `pg_tblspc/${t.oid}/${RECORD_NAME}`);
}

/** Leaves nothing behind in (or of) the locations, as for the data directory. */
export async function wipeTablespaces(ts: TablespaceRoots | undefined, owner: Owner | undefined): Promise<void> {
  for (const r of ts?.roots ?? []) await wipe(r.plan.pgdata, r.created, owner, r.plan.ownerHoldsParent);
}

/**
 * pg_tblspc/<oid> -> location for every tablespace, and tablespace_map naming the same locations
 * (only when the backup has one, and only after pg_verifybackup: it checks the file as backed up).
 */
export async function linkTablespaces(pgdata: string, list: readonly TablespacePlan[], owner: Owner | undefined): Promise<void> {
  if (list.length === 0) return;
  await writeAsOwner(`${pgdata}/pg_tblspc`, owner, list.map((t) => ({ name: t.oid, data: '', link: t.location! })));
  log.info(`tablespaces: ${list.map((t) => `pg_tblspc/${t.oid} -> ${t.location}`).join(', ')}`);
}

export async function rewriteTablespaceMap(pgdata: string, list: readonly TablespacePlan[], owner: Owner | undefined): Promise<void> {
  if (list.length === 0) return;
  const have = await sha256AsOwner(pgdata, owner, TABLESPACE_MAP);
  const text = Buffer.from(tablespaceMapText(list));
  if (have === null || have === createHash('sha256').update(text).digest('hex')) return;
  await writeAsOwner(pgdata, owner, [{ name: TABLESPACE_MAP, data: text.toString('base64'), replace: true }]);
  log.info(`rewrote ${pgdata}/${TABLESPACE_MAP} with the new tablespace locations (PostgreSQL recreates pg_tblspc links from it at recovery start)`);
}
