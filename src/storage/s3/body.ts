// Wraps a GetObject response body so that every failure while reading it is a WalvaultError and an
// abort of the caller's signal destroys it at once.
import { PassThrough, type Readable } from 'node:stream';
import { abortErrorFor, classifyS3Error, type S3Op } from './errors.js';

/**
 * Returns a Readable that carries `body`'s bytes. Errors of the underlying socket (reset, the
 * handler's idle timeout) surface as classified WalvaultErrors; `signal` aborting before the end
 * destroys both streams with a retryable StorageUnavailable; destroying the returned stream
 * releases the socket.
 */
export function guardBody(body: Readable, where: S3Op, signal?: AbortSignal): Readable {
  const out = new PassThrough({ highWaterMark: 256 * 1024 });
  let finished = false;

  const fail = (e: unknown): void => {
    if (finished) return;
    finished = true;
    cleanup();
    const err = classifyS3Error(e, where);
    body.destroy();
    out.destroy(err);
  };
  const onAbort = (): void => fail(abortErrorFor(signal as AbortSignal));
  const cleanup = (): void => {
    signal?.removeEventListener('abort', onAbort);
  };

  body.on('error', fail);
  body.on('end', () => {
    finished = true;
    cleanup();
  });
  // A socket closed without an error event must not leave the consumer waiting forever.
  body.on('close', () => {
    if (!body.readableEnded) {
      fail(Object.assign(new Error('response body closed before its end'), { code: 'ERR_STREAM_PREMATURE_CLOSE' }));
    }
  });
  // The consumer gave up: free the socket (the handler discards it rather than reusing it).
  out.on('close', () => {
    if (!body.readableEnded) {
      finished = true;
      cleanup();
      body.destroy();
    }
  });
  if (signal) {
    if (signal.aborted) {
      queueMicrotask(onAbort);
    } else {
      signal.addEventListener('abort', onAbort, { once: true });
    }
  }
  body.pipe(out);
  return out;
}
