import { Transform, type TransformCallback } from 'node:stream';
import tar from 'tar-stream';
import { backupError, isWalvaultError } from '../common/errors.js';

// Both ends of a backup read the tar stream of pg_basebackup with tar-stream (a maintained,
// streaming parser; it checks header checksums and reports a truncated archive):
//  - backup-push --method stream parses it member by member into data objects (stream-objects.ts);
//    TarTap picks up backup_label, backup_manifest and a few small files without holding a stream;
//  - backup-fetch extracts it into the new data directory (extract.ts).

type Extract = ReturnType<typeof tar.extract>;
type Header = tar.Header;

/**
 * A tar-stream extractor driven from Node streams: write() waits for it to drain (bounded memory),
 * end() resolves once every entry was handled. Its first error is kept, so a failure reported
 * between two writes (an entry handler failing late) still reaches the next write or end.
 */
export class TarSink {
  readonly extract: Extract = tar.extract();
  private error: Error | undefined;
  private readonly waiters = new Set<(e: Error) => void>();

  constructor() {
    this.extract.on('error', (e: Error) => {
      this.error ??= e;
      for (const w of [...this.waiters]) w(e);
    });
  }

  private wait(register: (finish: (e?: Error | null) => void) => void, cb: (e?: Error | null) => void): void {
    if (this.error) return cb(this.error);
    let done = false;
    const finish = (e?: Error | null) => {
      if (done) return;
      done = true;
      this.waiters.delete(onError);
      cb(e ?? null);
    };
    const onError = (e: Error) => finish(e);
    this.waiters.add(onError);
    register(finish);
  }

  write(chunk: Buffer, cb: (e?: Error | null) => void): void {
    this.wait((finish) => {
      if (this.extract.write(chunk)) finish();
      else this.extract.once('drain', () => finish());
    }, cb);
  }

  end(cb: (e?: Error | null) => void): void {
    this.wait((finish) => {
      this.extract.once('finish', () => finish());
      this.extract.once('close', () => finish(this.error ?? new Error('the tar parser closed before the end of the archive')));
      this.extract.end(undefined as never);
    }, cb);
  }

  destroy(): void {
    this.extract.destroy();
  }
}

/** Small members of the backup that backup-push keeps in memory, with the most it reads of each. */
export const TAPPED: Record<string, number> = {
  backup_label: 64 * 1024,
  tablespace_map: 16 * 1024 * 1024,
  PG_VERSION: 64,
  'global/pg_control': 8192,
  // ~150 bytes per file in the data directory: large clusters have large manifests.
  backup_manifest: 1024 * 1024 * 1024,
};

/**
 * Pass-through stream that parses the tar flowing through it. `files` holds the tapped members once
 * the stream has ended; `label` resolves as soon as backup_label (pg_basebackup's first member)
 * has been read, which is when backup-push learns the backup's start segment (and so its id).
 */
export class TarTap extends Transform {
  readonly files = new Map<string, Buffer>();
  entries = 0;
  /** The member whose header was read last (backup-push: global/pg_control means the data is all sent). */
  lastEntry: string | undefined;
  readonly label: Promise<Buffer>;
  private resolveLabel!: (b: Buffer) => void;
  private rejectLabel!: (e: Error) => void;
  private readonly sink = new TarSink();

  constructor() {
    super({ highWaterMark: 1024 * 1024 });
    this.label = new Promise<Buffer>((res, rej) => {
      this.resolveLabel = res;
      this.rejectLabel = rej;
    });
    this.label.catch(() => undefined);
    this.sink.extract.on('entry', (header: Header, stream, next) => {
      this.entries++;
      const name = normalizeName(header.name);
      this.lastEntry = name;
      const cap = header.type === 'file' ? TAPPED[name] : undefined;
      if (cap === undefined) {
        stream.on('end', () => next());
        stream.on('error', (e: Error) => next(e));
        stream.resume();
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      stream.on('data', (c) => {
        if (!Buffer.isBuffer(c)) return;
        size += c.length;
        if (size <= cap) chunks.push(c);
      });
      stream.on('error', (e: Error) => next(e));
      stream.on('end', () => {
        if (size > cap) return next(backupError(`${name} in the backup is ${size} bytes, more than walvault reads (${cap})`));
        const body = Buffer.concat(chunks);
        this.files.set(name, body);
        if (name === 'backup_label') this.resolveLabel(body);
        next();
      });
    });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.sink.write(chunk, (e) => {
      if (e) return cb(wrapTarError(e, 'the backup stream'));
      cb(null, chunk);
    });
  }

  override _flush(cb: TransformCallback): void {
    this.sink.end((e) => {
      if (e) return cb(wrapTarError(e, 'the backup stream'));
      if (!this.files.has('backup_label')) {
        this.rejectLabel(backupError('the backup stream ended without a backup_label'));
      }
      cb();
    });
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    this.rejectLabel(err ?? backupError('the backup stream was closed before its backup_label'));
    this.sink.destroy();
    cb(err);
  }
}

export function wrapTarError(e: Error, what: string): Error {
  if (isWalvaultError(e)) return e;
  return backupError(`${what} is not a valid tar archive: ${e.message}`, { cause: e });
}

export function normalizeName(name: string): string {
  return name.replace(/^(\.\/)+/, '').replace(/\/+$/, '');
}
