// The S3 driver against real S3-compatible stores (radosgw: conditional writes; Swift s3api: 501 on
// If-None-Match, Content-MD5 required on DeleteObjects). Timeout behaviour is checked through a small
// HTTP reverse proxy in front of the store that records requests and can stall a response mid-body.
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { CreateMultipartUploadCommand, UploadPartCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from '../../src/common/errors.js';
import { createS3Storage } from '../../src/storage/s3/driver.js';
import type { S3Options } from '../../src/storage/s3/options.js';
import type { Storage } from '../../src/storage/types.js';
import {
  createTestBucket,
  getRaw,
  headRaw,
  listKeys,
  listMultipartUploads,
  putRaw,
  s3ClientFor,
  s3OptionsFor,
  testStores,
  type TestStore,
} from '../support/stores.js';
import { failure } from '../support/rejection.js';

const MiB = 1024 * 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

interface RecordedRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
}

/**
 * Reverse proxy to `upstream`. Requests pass unchanged (the Host header too, so SigV4 still
 * verifies). With `stallAfter` set, GET responses stop after that many body bytes and the
 * connection stays open and silent.
 */
async function startProxy(upstream: string, tls?: { key: string; cert: string }) {
  const target = new URL(upstream);
  const requests: RecordedRequest[] = [];
  const state: { stallAfter?: number; failPart?: number } = {};
  const handler: http.RequestListener = (req, res) => {
    requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    if (state.failPart !== undefined && req.method === 'PUT' && new RegExp(`[?&]partNumber=${state.failPart}(&|$)`).test(req.url ?? '')) {
      req.resume();
      res.writeHead(503, { 'content-type': 'application/xml' });
      res.end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>');
      return;
    }
    const up = http.request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
      (ur) => {
        res.writeHead(ur.statusCode ?? 502, ur.headers);
        const limit = req.method === 'GET' ? state.stallAfter : undefined;
        if (limit === undefined) {
          ur.pipe(res);
          return;
        }
        let sent = 0;
        ur.on('data', (chunk: Buffer) => {
          if (sent >= limit) return;
          const part = chunk.subarray(0, limit - sent);
          sent += part.length;
          res.write(part);
        });
      },
    );
    up.on('error', () => res.destroy());
    req.pipe(up);
  };
  const server = tls ? https.createServer(tls, handler) : http.createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    endpoint: `${tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    requests,
    state,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Yields `total` random bytes in 256 KiB chunks, or fails after `failAfter` bytes. */
function source(total: number, failAfter?: number) {
  const data = randomBytes(total);
  let pos = 0;
  const stream = new Readable({
    read() {
      if (failAfter !== undefined && pos >= failAfter) {
        this.destroy(new Error('source broke'));
        return;
      }
      if (pos >= total) {
        this.push(null);
        return;
      }
      const end = Math.min(total, pos + 256 * 1024);
      this.push(data.subarray(pos, end));
      pos = end;
    },
  });
  return { data, stream };
}

const stores = testStores();

describe.each(stores.map((s) => [s.name, s] as const))('S3 driver on %s', (_name, store) => {
  let bucket: string;
  let storage: Storage;
  const opened: Storage[] = [];
  const open = (over: Partial<S3Options> = {}) => {
    const s = createS3Storage(s3OptionsFor(store, bucket, over));
    opened.push(s);
    return s;
  };

  beforeAll(async () => {
    bucket = await createTestBucket(store, `drv-${store.name}`);
    storage = open();
  });
  afterAll(() => {
    for (const s of opened) s.close();
  });

  it('putIfAbsent creates once, then returns the stored metadata and leaves the object alone', async () => {
    const body = randomBytes(64 * 1024);
    const meta = { sha256: sha(body), size: String(body.length), codec: 'none' };
    expect(await storage.putIfAbsent('wal/000000010000000000000001', body, meta)).toEqual({ created: true });

    const raw = await getRaw(store, bucket, 'repo/main/wal/000000010000000000000001');
    expect(raw?.body.equals(body)).toBe(true);
    expect(raw?.metadata).toMatchObject({ 'walvault-sha256': meta.sha256, 'walvault-size': meta.size, 'walvault-codec': 'none' });

    // Second writer with other bytes (Swift: the probe's 501 → remembered HEAD-then-PUT fallback).
    const again = await storage.putIfAbsent('wal/000000010000000000000001', randomBytes(100), { sha256: 'other' });
    expect(again.created).toBe(false);
    if (!again.created) {
      expect(again.existing.meta).toEqual(meta);
      expect(again.existing.storedSize).toBe(body.length);
    }
    expect((await getRaw(store, bucket, 'repo/main/wal/000000010000000000000001'))?.body.equals(body)).toBe(true);
    // A fresh key after the fallback kicked in still works.
    expect(await storage.putIfAbsent('wal/000000010000000000000002', body, meta)).toEqual({ created: true });
  });

  it('conditionalWrites on/off behave as configured', async () => {
    const off = open({ conditionalWrites: 'off' });
    expect(await off.putIfAbsent('cw/off', Buffer.from('a'), {})).toEqual({ created: true });
    expect((await off.putIfAbsent('cw/off', Buffer.from('b'), {})).created).toBe(false);

    const on = open({ conditionalWrites: 'on' });
    if (store.conditionalWrites) {
      expect(await on.putIfAbsent('cw/on', Buffer.from('a'), {})).toEqual({ created: true });
      expect((await on.putIfAbsent('cw/on', Buffer.from('b'), {})).created).toBe(false);
    } else {
      const e = await failure(on.putIfAbsent('cw/on', Buffer.from('a'), {}));
      expect(e.code).toBe('ConfigError');
      expect(e.message).toMatch(/conditional writes are not supported/);
      expect(e.message).toMatch(/HTTP 501 NotImplemented/);
    }
  });

  it('put/head/get round-trip metadata; missing keys are null', async () => {
    const body = randomBytes(300 * 1024);
    await storage.put('backups/b1/backup.json', body, { sha256: sha(body), codec: 'zstd' });
    const info = await storage.head('backups/b1/backup.json');
    expect(info).toMatchObject({ key: 'backups/b1/backup.json', storedSize: body.length, meta: { sha256: sha(body), codec: 'zstd' } });
    expect(info?.lastModified).toBeInstanceOf(Date);

    const got = await storage.get('backups/b1/backup.json');
    expect(got?.info.meta).toEqual({ sha256: sha(body), codec: 'zstd' });
    expect(got?.info.storedSize).toBe(body.length);
    expect((await buffer(got!.body)).equals(body)).toBe(true);

    // put replaces
    await storage.put('backups/b1/backup.json', Buffer.from('v2'), { codec: 'none' });
    expect((await storage.head('backups/b1/backup.json'))?.meta).toEqual({ codec: 'none' });

    expect(await storage.head('wal/nope')).toBeNull();
    expect(await storage.get('wal/nope')).toBeNull();
  });

  it('uses <prefix>/<key> without a leading or double slash, also for an empty prefix', async () => {
    const root = open({ prefix: '' });
    await root.put('top-level-key', Buffer.from('x'), {});
    expect(await headRaw(store, bucket, 'top-level-key')).not.toBeNull();
    expect((await collect(root.list('top-level'))).map((o) => o.key)).toEqual(['top-level-key']);
    expect(root.url).toBe(`s3://${bucket}`);
    expect(storage.url).toBe(`s3://${bucket}/repo/main`);
  });

  it('wrong secret → AccessDenied (exit 8, not retryable), for GET, HEAD and PUT', async () => {
    const bad = open({ secretAccessKey: `${store.secretAccessKey}x` });
    for (const call of [() => bad.get('wal/x'), () => bad.head('wal/x'), () => bad.put('wal/x', Buffer.from('x'), {})]) {
      const e = await failure(call());
      expect(e.code).toBe('AccessDenied');
      expect(e.exitCode).toBe(ExitCode.accessDenied);
      expect(e.retryable).toBe(false);
      expect(e.message).toMatch(/HTTP 403/);
      expect(e.message).toMatch(/s3:ListBucket/);
      expect(e.message).not.toContain(store.secretAccessKey);
      expect(e.message).not.toContain('\n');
    }
  });

  it('missing bucket → MissingBucket, also for a HEAD (never "not found")', async () => {
    const nb = open({ bucket: `wv-missing-${randomBytes(4).toString('hex')}` });
    for (const call of [() => nb.get('wal/x'), () => nb.head('wal/x'), () => nb.put('wal/x', Buffer.from('x'), {}), () => collect(nb.list('wal/'))]) {
      const e = await failure(call());
      expect(e.code).toBe('MissingBucket');
      expect(e.exitCode).toBe(ExitCode.missingBucket);
      expect(e.retryable).toBe(false);
    }
  });

  it('sends Content-MD5 on PutObject, UploadPart and DeleteObjects; uploads 20 MiB in 5 MiB parts', async () => {
    const proxy = await startProxy(store.endpoint);
    try {
      const via = open({ endpoint: proxy.endpoint, queueSize: 3 });
      await via.put('md5/put', randomBytes(1000), {});
      const { data, stream } = source(20 * MiB);
      const progress: number[] = [];
      const r = await via.upload('backups/big/base.tar', stream, { sha256: sha(data) }, { onProgress: (n) => progress.push(n) });
      expect(r.storedSize).toBe(20 * MiB);
      expect(progress.at(-1)).toBe(20 * MiB);
      await via.delete(['md5/put', 'md5/absent-key-is-fine', 'backups/big/base.tar']);

      const md5 = (m: RegExp): unknown[] => proxy.requests.filter((q) => m.test(`${q.method} ${q.url}`)).map((q) => q.headers['content-md5']);
      const puts = md5(/^PUT \/[^?]*\/md5\/put(\?|$)/);
      const parts = md5(/^PUT .*[?&]partNumber=/);
      const deletes = md5(/^POST .*[?&]delete(=|&|$)/);
      const lines = proxy.requests.map((q) => `${q.method} ${q.url}`).join('\n');
      expect(puts.length, lines).toBe(1);
      expect(parts.length).toBe(4);
      expect(deletes.length).toBe(1);
      for (const v of [...puts, ...parts, ...deletes]) expect(v).toMatch(/^[A-Za-z0-9+/]{22}==$/);
      // Streamed bodies never use aws-chunked framing.
      expect(proxy.requests.some((q) => q.headers['content-encoding'] === 'aws-chunked')).toBe(false);
    } finally {
      await proxy.close();
    }
  });

  it('upload of a 20 MiB stream reads back identical', async () => {
    const { data, stream } = source(20 * MiB);
    const r = await storage.upload('backups/b2/base.tar', stream, { sha256: sha(data), codec: 'none' });
    expect(r.storedSize).toBe(data.length);
    const got = await storage.get('backups/b2/base.tar');
    expect(got?.info.meta).toEqual({ sha256: sha(data), codec: 'none' });
    expect(sha(await buffer(got!.body))).toBe(sha(data));
    // A stream shorter than one part becomes a single PutObject.
    const small = source(1000);
    expect((await storage.upload('backups/b2/small', small.stream, {})).storedSize).toBe(1000);
    expect((await getRaw(store, bucket, 'repo/main/backups/b2/small'))?.body.equals(small.data)).toBe(true);
  });

  it('upload whose source fails midway rejects and leaves no multipart upload', async () => {
    const { stream } = source(20 * MiB, 12 * MiB);
    const e = await failure(storage.upload('backups/b3/base.tar', stream, {}));
    expect(e.message).toMatch(/source broke/);
    expect(await listMultipartUploads(store, bucket)).toEqual([]);
    expect(await headRaw(store, bucket, 'repo/main/backups/b3/base.tar')).toBeNull();
  });

  it('upload stops at the first failed part (no reading the rest of the source) and leaves no multipart upload', async () => {
    const proxy = await startProxy(store.endpoint);
    try {
      proxy.state.failPart = 2;
      const via = open({ endpoint: proxy.endpoint, queueSize: 2 });
      const { stream } = source(200 * MiB);
      let read = 0;
      stream.on('data', (c: Buffer) => (read += c.length));
      const e = await failure(via.upload('backups/b5/base.tar', stream, {}));
      expect(e.code).toBe('StorageUnavailable');
      expect(e.retryable).toBe(true);
      expect(e.message).toMatch(/HTTP 503 SlowDown/);
      expect(read).toBeLessThan(40 * MiB);
      expect(stream.destroyed).toBe(true);
      expect(proxy.requests.filter((q) => q.method === 'PUT' && /partNumber=/.test(q.url)).length).toBeLessThanOrEqual(5);
      expect(await listMultipartUploads(store, bucket)).toEqual([]);
    } finally {
      await proxy.close();
    }
  });

  it('upload aborted through its signal rejects (retryable) and leaves no multipart upload', async () => {
    const ac = new AbortController();
    const { stream } = source(40 * MiB);
    const p = storage.upload('backups/b4/base.tar', stream, {}, {
      signal: ac.signal,
      onProgress: (n) => {
        if (n >= 5 * MiB) ac.abort(new Error('deadline'));
      },
    });
    const e = await failure(p);
    expect(e.code).toBe('StorageUnavailable');
    expect(e.retryable).toBe(true);
    expect(stream.destroyed).toBe(true);
    expect(await listMultipartUploads(store, bucket)).toEqual([]);
  });

  it('upload whose source stalls is ended by its signal, leaving no multipart upload', async () => {
    let pushed = 0;
    const stalled = new Readable({
      read() {
        if (pushed < 6 * MiB) {
          this.push(randomBytes(MiB));
          pushed += MiB;
        } // then never again: a producer that hangs
      },
    });
    const ac = new AbortController();
    const p = storage.upload('backups/b6/base.tar', stalled, {}, { signal: ac.signal });
    // Wait until part 1 is stored (so a multipart upload exists), then give up.
    for (let i = 0; i < 100 && (await listMultipartUploads(store, bucket)).length === 0; i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    ac.abort(new Error('deadline'));
    const t0 = performance.now();
    const e = await failure(p);
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(e.code).toBe('StorageUnavailable');
    expect(stalled.destroyed).toBe(true);
    expect(await listMultipartUploads(store, bucket)).toEqual([]);
  });

  it('list pages through keys in lexical order, relative to the prefix', async () => {
    const paged = open({ listPageSize: 2 });
    const names = ['0000000100000000000000A1', '0000000100000000000000A0', '00000001.history', '0000000100000000000000B0', '0000000100000000000000A2'];
    for (const n of names) await paged.put(`lst/${n}`, Buffer.from(n), {});
    await putRaw(store, bucket, 'repo/mainx/lst/not-mine', Buffer.from('x'));
    await putRaw(store, bucket, 'repo/main/lstx', Buffer.from('x'));
    const listed = await collect(paged.list('lst/'));
    expect(listed.map((o) => o.key)).toEqual([...names].sort().map((n) => `lst/${n}`));
    expect(listed[0]?.storedSize).toBe(names.sort()[0]!.length);
    expect(listed[0]?.lastModified).toBeInstanceOf(Date);
    expect((await collect(paged.list('lst'))).length).toBe(names.length + 1);
    expect(await collect(paged.list('nothing-here/'))).toEqual([]);
  });

  it('delete removes keys (DeleteObjects with Content-MD5) and ignores missing ones', async () => {
    for (const k of ['d/1', 'd/2', 'd/3', 'keep']) await storage.put(k, Buffer.from(k), {});
    await storage.delete(['d/1', 'd/2', 'd/3', 'd/never-existed']);
    expect(await listKeys(store, bucket, 'repo/main/d/')).toEqual([]);
    expect(await storage.head('keep')).not.toBeNull();
    await storage.delete([]);
  });

  it('abortStaleUploads aborts incomplete uploads older than the cut-off only', async () => {
    const raw = s3ClientFor(store);
    const key = 'repo/main/backups/stale/base.tar';
    const { UploadId } = await raw.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
    await raw.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId, PartNumber: 1, Body: randomBytes(1024) }));
    const other = await raw.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: 'elsewhere/x' }));

    expect(await storage.abortStaleUploads('backups/', new Date(Date.now() - 3600_000))).toBe(0);
    expect(await storage.abortStaleUploads('backups/', new Date(Date.now() + 60_000))).toBe(1);
    expect((await listMultipartUploads(store, bucket)).map((u) => u.uploadId)).toEqual([other.UploadId]);
    await open({ prefix: '' }).abortStaleUploads('elsewhere/', new Date(Date.now() + 60_000));
    expect(await listMultipartUploads(store, bucket)).toEqual([]);
  });

  it('a get aborted through its signal mid-body destroys the body with a retryable error', async () => {
    const body = randomBytes(16 * MiB);
    await storage.put('wal/abort-me', body, {});
    const ac = new AbortController();
    const got = await storage.get('wal/abort-me', { signal: ac.signal });
    const chunks: Buffer[] = [];
    const read = (async () => {
      for await (const c of got!.body) {
        chunks.push(c as Buffer);
        if (chunks.length === 2) ac.abort(new Error('deadline'));
      }
    })();
    const e = await failure(read);
    expect(e.code).toBe('StorageUnavailable');
    expect(e.retryable).toBe(true);
    expect(got!.body.destroyed).toBe(true);
    expect(chunks.reduce((n, c) => n + c.length, 0)).toBeLessThan(body.length);
  });

  it('a socket stalling mid-body errors out after the idle timeout', async () => {
    await storage.put('wal/stall', randomBytes(4 * MiB), {});
    const proxy = await startProxy(store.endpoint);
    try {
      proxy.state.stallAfter = 100 * 1024;
      const via = open({ endpoint: proxy.endpoint, idleTimeoutMs: 1000 });
      const got = await via.get('wal/stall');
      const t0 = performance.now();
      const e = await failure(buffer(got!.body));
      const ms = performance.now() - t0;
      expect(e.code).toBe('StorageUnavailable');
      expect(e.retryable).toBe(true);
      expect(ms).toBeGreaterThan(800);
      expect(ms).toBeLessThan(4000);
    } finally {
      await proxy.close();
    }
  });
});

describe('S3 driver network failures', () => {
  const store: TestStore = stores[0] ?? {
    name: 'rgw',
    endpoint: 'http://127.0.0.1:1',
    region: 'us-east-1',
    accessKeyId: 'AKIAEXAMPLE',
    secretAccessKey: 'secret',
    conditionalWrites: true,
  };

  it('closed port → StorageUnavailable, retryable, fast', async () => {
    const s = createS3Storage(s3OptionsFor(store, 'any-bucket', { endpoint: `http://127.0.0.1:${await closedPort()}` }));
    try {
      const t0 = performance.now();
      const e = await failure(s.head('wal/x'));
      expect(performance.now() - t0).toBeLessThan(2500);
      expect(e.code).toBe('StorageUnavailable');
      expect(e.exitCode).toBe(ExitCode.storageUnavailable);
      expect(e.retryable).toBe(true);
      expect(e.message).toMatch(/ECONNREFUSED/);
    } finally {
      s.close();
    }
  });

  it('a server that accepts but never answers → StorageUnavailable after the idle timeout', async () => {
    const sockets: net.Socket[] = [];
    const server = net.createServer((sock) => sockets.push(sock));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    const s = createS3Storage(s3OptionsFor(store, 'any-bucket', { endpoint: `http://127.0.0.1:${port}`, idleTimeoutMs: 1000 }));
    try {
      const t0 = performance.now();
      const e = await failure(s.get('wal/x'));
      const ms = performance.now() - t0;
      expect(e.code).toBe('StorageUnavailable');
      expect(e.retryable).toBe(true);
      expect(ms).toBeGreaterThan(800);
      expect(ms).toBeLessThan(4000);
    } finally {
      s.close();
      for (const sock of sockets) sock.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it('TLS: trusts the endpoint through caBundle, refuses it without; a missing bundle is a ConfigError', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'wv-ca-'));
    const key = join(dir, 'key.pem');
    const cert = join(dir, 'cert.pem');
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
      '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert,
    ], { stdio: 'ignore' });
    const proxy = await startProxy(store.endpoint, { key: readFileSync(key, 'utf8'), cert: readFileSync(cert, 'utf8') });
    const bucket = stores.length > 0 ? await createTestBucket(store, 'drv-tls') : 'any-bucket';
    const trusted = createS3Storage(s3OptionsFor(store, bucket, { endpoint: proxy.endpoint, caBundle: cert }));
    const untrusted = createS3Storage(s3OptionsFor(store, bucket, { endpoint: proxy.endpoint }));
    try {
      const e = await failure(untrusted.head('wal/x'));
      expect(e.retryable).toBe(false);
      expect(e.message).toMatch(/SELF_SIGNED|certificate/i);
      if (stores.length > 0) {
        await trusted.put('wal/tls', Buffer.from('over tls'), { codec: 'none' });
        const got = await trusted.get('wal/tls');
        expect((await buffer(got!.body)).toString()).toBe('over tls');
      }
      expect(() => createS3Storage(s3OptionsFor(store, bucket, { caBundle: join(dir, 'missing.pem') }))).toThrow(
        expect.objectContaining({ code: 'ConfigError', exitCode: ExitCode.config }),
      );
    } finally {
      trusted.close();
      untrusted.close();
      await proxy.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
