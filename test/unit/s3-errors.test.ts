// What the AWS SDK really produces for each kind of answer (a tiny local HTTP server plays the
// endpoint), and how walvault classifies it: only a 404 with S3's NoSuchKey is "not found".
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { classifyS3Error, isNoSuchKey } from '../../src/storage/s3/errors.js';

type Answer = { status: number; type?: string; body: string };
let answer: Answer = { status: 200, body: '' };
let server: http.Server;
let client: S3Client;

beforeAll(async () => {
  server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(answer.status, { ...(answer.type ? { 'content-type': answer.type } : {}), 'content-length': Buffer.byteLength(answer.body) });
      res.end(req.method === 'HEAD' ? undefined : answer.body);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  client = new S3Client({
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: 'a', secretAccessKey: 'b' },
    maxAttempts: 1,
  });
});
afterAll(async () => {
  client.destroy();
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

const xmlError = (code: string) => `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>m</Message></Error>`;
const HTML = '<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1></body></html>';
const where = { op: 'GetObject', target: 's3://b/k' };

async function sdkError(a: Answer, op: 'get' | 'head' | 'list'): Promise<unknown> {
  answer = a;
  const cmd =
    op === 'get'
      ? new GetObjectCommand({ Bucket: 'b', Key: 'k' })
      : op === 'head'
        ? new HeadObjectCommand({ Bucket: 'b', Key: 'k' })
        : new ListObjectsV2Command({ Bucket: 'b' });
  try {
    await client.send(cmd as GetObjectCommand);
  } catch (e) {
    return e;
  }
  throw new Error('expected the SDK to throw');
}

describe('S3 error classification', () => {
  it('NoSuchKey to a GET is the one "not found"', async () => {
    const e = await sdkError({ status: 404, type: 'application/xml', body: xmlError('NoSuchKey') }, 'get');
    expect(isNoSuchKey(e)).toBe(true);
  });

  it.each([
    ['an HTML 404 (the SDK parses it into NotFound)', { status: 404, type: 'text/html', body: HTML }, /no S3 error code, text\/html body/],
    ['an empty 404', { status: 404, body: '' }, /no S3 error code/],
    ['a plain-text 404 (not XML)', { status: 404, type: 'text/plain', body: '404 page not found\n' }, /no S3 error code, text\/plain body/],
    ['a 404 with another S3 code', { status: 404, type: 'application/xml', body: xmlError('NoSuchWebsiteConfiguration') }, /S3 error code NoSuchWebsiteConfiguration/],
  ] as const)('%s to a GET, HEAD or listing is a retryable endpoint error', async (_label, a, why) => {
    for (const op of ['get', 'head', 'list'] as const) {
      const e = await sdkError(a, op);
      expect(isNoSuchKey(e)).toBe(false);
      const c = classifyS3Error(e, where);
      expect(c.code, op).toBe('StorageUnavailable');
      expect(c.retryable).toBe(true);
      expect(c.message).toMatch(/HTTP 404/);
      expect(c.message).toMatch(/not an authoritative "not found"/);
      if (op !== 'head') expect(c.message).toMatch(why); // a HEAD has no body: no code to name
      expect(c.message).not.toContain('\n');
    }
  });

  it('NoSuchBucket is MissingBucket; a HEAD 404 alone never says which', async () => {
    const e = await sdkError({ status: 404, type: 'application/xml', body: xmlError('NoSuchBucket') }, 'get');
    expect(classifyS3Error(e, where).code).toBe('MissingBucket');
    const h = await sdkError({ status: 404, type: 'application/xml', body: xmlError('NoSuchKey') }, 'head');
    expect(isNoSuchKey(h)).toBe(false);
  });

  it('an unparseable 200 listing is an endpoint error; a 403 or 503 page keeps its meaning', async () => {
    const text = await sdkError({ status: 200, type: 'text/plain', body: 'hello\n' }, 'list');
    const c = classifyS3Error(text, where);
    expect(c.code).toBe('StorageUnavailable');
    expect(c.retryable).toBe(true);
    expect(c.message).toMatch(/HTTP 200 with a body that is not S3's XML \(text\/plain\)/);
    const denied = await sdkError({ status: 403, type: 'text/html', body: '<html><hr></html>' }, 'get');
    expect(classifyS3Error(denied, where).code).toBe('AccessDenied');
    expect(classifyS3Error(denied, where).message).toMatch(/lacks s3:ListBucket\)$/);
    const busy = await sdkError({ status: 503, type: 'text/html', body: '<html><hr></html>' }, 'get');
    expect(classifyS3Error(busy, where)).toMatchObject({ code: 'StorageUnavailable', retryable: true });
  });

  it('AccessDenied to a delete says the credentials may not delete and who needs the right (append-only credentials)', async () => {
    const e = await sdkError({ status: 403, type: 'application/xml', body: xmlError('AccessDenied') }, 'get');
    for (const op of ['DeleteObjects', 'DeleteObject']) {
      const c = classifyS3Error(e, { op, target: 's3://b/p/backups/x/backup.json' });
      expect(c.code).toBe('AccessDenied');
      expect(c.message).toBe(`S3 ${op} s3://b/p/backups/x/backup.json failed: HTTP 403 AccessDenied: m (these credentials may not delete: walvault delete needs s3:DeleteObject on the prefix; a pusher's append-only credentials lack it on purpose)`);
    }
  });
});
