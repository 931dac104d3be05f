// backup-fetch of a format-2 backup hands the files it cut out of a data object to the same tar
// extractor (in this process, or the restore worker running as the owner) that restores a format-1
// backup, so both formats reach the disk through one set of checks (extract.ts). This writes the
// few tar records that needs: ustar headers, a pax header for paths longer than 100 bytes, base-256
// sizes from 8 GiB, the padding and the end of the archive.

const BLOCK = 512;
/** Two empty blocks end a tar archive. */
export const TAR_END = Buffer.alloc(2 * BLOCK);

function octal(buf: Buffer, value: number, offset: number, width: number): void {
  buf.write(value.toString(8).padStart(width - 1, '0') + '\0', offset, width, 'latin1');
}

function ustar(name: Buffer, size: number, mode: number, mtimeSec: number, type: '0' | '5' | 'x'): Buffer {
  const h = Buffer.alloc(BLOCK);
  name.copy(h, 0, 0, Math.min(name.length, 100));
  octal(h, mode & 0o7777, 100, 8);
  octal(h, 0, 108, 8);
  octal(h, 0, 116, 8);
  if (size < 8 ** 11) octal(h, size, 124, 12);
  else {
    // Base-256 (GNU, read by tar-stream): 0x80 then the size big-endian in 11 bytes.
    h[124] = 0x80;
    let n = size;
    for (let i = 135; i > 124; i--) {
      h[i] = n % 256;
      n = Math.floor(n / 256);
    }
  }
  octal(h, Math.max(0, Math.floor(mtimeSec)), 136, 12);
  h.write(type, 156, 'latin1');
  h.write('ustar\x0000', 257, 'latin1');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'latin1');
  return h;
}

/** A pax record "<len> key=value\n", where <len> counts the whole record. */
function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

export function tarPadding(size: number): Buffer {
  return Buffer.alloc((BLOCK - (size % BLOCK)) % BLOCK);
}

/**
 * Format 2 only (extract.ts keepModes): the member's bytes go into the existing file at this
 * position, not into a new file (an extent of a file in pieces, file-plan.ts).
 */
export const PAX_POSITION = 'WALVAULT.position';

/** The header record(s) of one member: a regular file of `size` bytes or a directory; `extra` pax records (PAX_POSITION). */
export function tarHeader(path: string, type: 'file' | 'dir', size: number, mode: number, mtimeMs: number, extra: Record<string, string> = {}): Buffer {
  const name = Buffer.from(type === 'dir' ? `${path}/` : path, 'utf8');
  const mtime = mtimeMs / 1000;
  const main = ustar(name, type === 'dir' ? 0 : size, mode, mtime, type === 'dir' ? '5' : '0');
  const records = Object.entries(extra).map(([k, v]) => paxRecord(k, Buffer.from(v, 'utf8')));
  if (name.length > 100) records.unshift(paxRecord('path', name));
  if (records.length === 0) return main;
  const pax = Buffer.concat(records);
  return Buffer.concat([ustar(Buffer.from('././@PaxHeader'), pax.length, 0o644, mtime, 'x'), pax, tarPadding(pax.length), main]);
}
