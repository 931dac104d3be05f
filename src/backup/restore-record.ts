import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { backupError } from '../common/errors.js';
import { TAR_END, tarHeader, tarPadding } from './tar-encode.js';

// The progress record of a format-2 restore, kept inside the target directory while it is being
// restored (like pgBackRest's manifest copy), so that a backup-fetch killed in the middle can be run
// again with the same arguments and go on:
//
//   walvault restore of <backup id>\n        written first, before the directories
//   done dirs\n                              the directories (and empty files) are in, fsynced
//   done backups/<id>/data/<NNNNNN>\n        every file of that object written, fsynced and verified
//
// Lines are appended by the process that owns the target (the extractor, in-process or the owner's
// restore worker, on a marker member at the end of each tar stream, after every fsync of that
// stream), so the record never says more than the disk holds. It is removed once the restore is
// complete and verified, before the recovery settings are written.

export const RECORD_NAME = 'walvault.restore';
/** pax record of the marker member: its bytes are appended to the record once all before it is durable. */
export const PAX_DONE = 'WALVAULT.done';
export const DIRS_DONE = 'dirs';
const HEADER = 'walvault restore of ';
/** ~60 bytes a line: a million objects. */
const MAX_RECORD_BYTES = 64 * 1024 * 1024;

export interface RestoreRecord {
  backup: string;
  /** DIRS_DONE and the keys of the objects done. */
  done: Set<string>;
}

export function recordHeader(backup: string): string {
  return `${HEADER}${backup}\n`;
}

/** The tar member (then the end of the archive) that appends "done <what>" to the record. */
export function doneMarker(what: string): Buffer {
  const body = Buffer.from(`done ${what}\n`);
  return Buffer.concat([tarHeader(RECORD_NAME, 'file', body.length, 0o600, 0, { [PAX_DONE]: '1' }), body, tarPadding(body.length)]);
}

export const endWithMarker = (what: string): Buffer => Buffer.concat([doneMarker(what), TAR_END]);

/** `text` as a record, or a BackupError; a last line cut short by a kill is ignored. */
export function parseRecord(text: string, where: string): RestoreRecord {
  const lines = text.split('\n');
  const first = lines.shift() ?? '';
  if (!first.startsWith(HEADER)) throw backupError(`${where} is not a walvault restore record; empty the directory to restore into it`);
  const done = new Set<string>();
  for (const l of lines) if (l.startsWith('done ')) done.add(l.slice(5));
  return { backup: first.slice(HEADER.length).trim(), done };
}

/** The record's text in `root`, or null when there is none; never through a link, bounded. */
export async function readRecord(root: string): Promise<string | null> {
  const path = join(root, RECORD_NAME);
  let fh;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw backupError(`cannot read ${path}: ${(e as Error).message}`);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile() || st.size > MAX_RECORD_BYTES) throw backupError(`${path} is not a walvault restore record; empty the directory to restore into it`);
    return (await fh.readFile()).toString('utf8');
  } finally {
    await fh.close();
  }
}
