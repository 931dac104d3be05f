import { printableJson } from '../common/control-chars.js';
import { retryPolicy, type Config } from '../common/config.js';
import { formatBytes } from '../common/log.js';
import { Deadline } from '../common/retry.js';
import type { BackupInfo } from '../backup/backup-info.js';
import { listBackups } from '../backup/catalog.js';
import { openRepository } from '../archive/repository.js';

// walvault backup-list [--json]: complete backups only (those with backup.json), oldest first by
// recorded start time.
export async function backupList(config: Config, json: boolean): Promise<number> {
  const storage = await openRepository(config);
  const deadline = new Deadline(config.deadline * 1000);
  try {
    const backups = await listBackups(storage, retryPolicy(config), deadline);
    process.stdout.write(json ? printableJson(backups.map(publicFields)) : table(backups));
    return 0;
  } finally {
    deadline.dispose();
    storage.close();
  }
}

function publicFields(b: BackupInfo): Record<string, unknown> {
  return {
    id: b.id,
    format: b.format,
    ...(b.method ? { method: b.method } : {}),
    type: b.type ?? 'full',
    ...(b.reference ? { reference: b.reference } : {}),
    startTime: b.startTime,
    stopTime: b.stopTime,
    startLsn: b.startLsn,
    stopLsn: b.stopLsn,
    timeline: b.timeline,
    startSegment: b.startSegment,
    stopSegment: b.stopSegment,
    sizeBytes: b.sizeBytes,
    storedBytes: b.storedBytes,
    codec: b.codec,
    pgVersion: b.pgVersion,
    systemIdentifier: b.systemIdentifier,
    walSegmentSize: b.walSegmentSize,
    label: b.label,
  };
}

function table(backups: BackupInfo[]): string {
  if (backups.length === 0) return 'no backups\n';
  const rows = [
    ['id', 'type', 'start (UTC)', 'stop (UTC)', 'start LSN', 'stop LSN', 'tli', 'size', 'stored', 'pg'],
    ...backups.map((b) => [
      b.id,
      b.type ?? 'full',
      b.startTime.replace('T', ' ').replace(/\.\d+Z$/, 'Z'),
      b.stopTime.replace('T', ' ').replace(/\.\d+Z$/, 'Z'),
      b.startLsn,
      b.stopLsn,
      String(b.timeline),
      formatBytes(b.sizeBytes),
      formatBytes(b.storedBytes),
      String(b.pgVersion),
    ]),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n';
}
