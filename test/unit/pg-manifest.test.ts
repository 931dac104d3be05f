import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { parseBackupManifest } from '../../src/backup/manifest.js';
import { backupManifestChunks, buildBackupManifest, escapeJson, manifestTime } from '../../src/backup/pg-manifest.js';

const A = 'a'.repeat(64);
const B = '0123456789abcdef'.repeat(4);

describe('buildBackupManifest (PostgreSQL backup manifest version 1)', () => {
  it('writes the exact text backup_manifest.c writes, ending with the SHA-256 of everything before its last line', () => {
    const m = buildBackupManifest(
      [
        { path: 'backup_label', size: 227, mtimeMs: Date.UTC(2026, 10, 30, 6, 0, 5, 999), sha256: A },
        { path: 'base/1/1259', size: 0, mtimeMs: 0, sha256: B },
      ],
      { timeline: 1, startLsn: '0/2000028', endLsn: '0/02000100' },
    ).toString('utf8');
    const body =
      '{ "PostgreSQL-Backup-Manifest-Version": 1,\n"Files": [\n' +
      `{ "Path": "backup_label", "Size": 227, "Last-Modified": "2026-11-30 06:00:05 GMT", "Checksum-Algorithm": "SHA256", "Checksum": "${A}" },\n` +
      `{ "Path": "base/1/1259", "Size": 0, "Last-Modified": "1970-01-01 00:00:00 GMT", "Checksum-Algorithm": "SHA256", "Checksum": "${B}" }\n` +
      '],\n"WAL-Ranges": [\n{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }\n],\n';
    expect(m).toBe(`${body}"Manifest-Checksum": "${createHash('sha256').update(body).digest('hex')}"}\n`);
    const info = parseBackupManifest(m);
    expect(info).toMatchObject({ version: 1, fileCount: 2, filesBytes: 227, walRanges: [{ timeline: 1, startLsn: '0/2000028', endLsn: '0/2000100' }] });
  });

  it('an empty file list is "Files": [ followed directly by the closing line', () => {
    const m = buildBackupManifest([], { timeline: 3, startLsn: 'A/B', endLsn: 'c/d' }).toString();
    expect(m).toMatch(/^\{ "PostgreSQL-Backup-Manifest-Version": 1,\n"Files": \[\n\],\n"WAL-Ranges": \[\n\{ "Timeline": 3, "Start-LSN": "A\/B", "End-LSN": "C\/D" \}\n\],\n"Manifest-Checksum": "[0-9a-f]{64}"\}\n$/);
  });

  it('streams in pieces that join to the same bytes, for lists of any length', () => {
    const files = Array.from({ length: 3000 }, (_, i) => ({ path: `base/5/${16384 + i}`, size: i, mtimeMs: i * 1000, sha256: A }));
    const chunks = [...backupManifestChunks(files, { timeline: 1, startLsn: '0/1', endLsn: '0/2' })];
    expect(chunks.length).toBeGreaterThan(3);
    expect(Buffer.concat(chunks).equals(buildBackupManifest(files, { timeline: 1, startLsn: '0/1', endLsn: '0/2' }))).toBe(true);
    expect(parseBackupManifest(Buffer.concat(chunks).toString()).fileCount).toBe(3000);
  });

  it('escapes paths like escape_json and formats times in GMT, whole seconds', () => {
    expect(escapeJson('a"b\\c\td\u0001é/x')).toBe('"a\\"b\\\\c\\td\\u0001é/x"');
    expect(manifestTime(Date.UTC(2000, 0, 2, 3, 4, 5, 678))).toBe('2000-01-02 03:04:05 GMT');
  });

  it('refuses bad input as an internal error (a bug in the caller)', () => {
    const wal = { timeline: 1, startLsn: '0/1', endLsn: '0/2' };
    expect(() => buildBackupManifest([{ path: 'x', size: -1, mtimeMs: 0, sha256: A }], wal)).toThrow(/bad size/);
    expect(() => buildBackupManifest([{ path: 'x', size: 1, mtimeMs: 0, sha256: 'ABC' }], wal)).toThrow(/bad SHA-256/);
    expect(() => buildBackupManifest([], { ...wal, timeline: 0 })).toThrow(/bad timeline/);
    expect(() => buildBackupManifest([{ path: 'x\uD800', size: 1, mtimeMs: 0, sha256: A }], wal)).toThrow(/not valid Unicode/);
  });
});
