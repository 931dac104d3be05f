// The fault proxy itself, against a tiny local upstream (no S3 server needed): every action does
// what it says, headers (Host included) pass through untouched, rule selection is exact and
// reproducible, and close() ends stalled connections.
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { fault, FaultProxy, seededRandom } from '../support/fault-proxy.js';
import { sigV4Signature } from '../support/sigv4.js';

const BODY = Buffer.alloc(64 * 1024);
for (let i = 0; i < BODY.length; i++) BODY[i] = (i * 31) & 0xff;

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
  bodyLength: number;
  complete: boolean;
}

let upstream: http.Server;
let upstreamUrl: string;
const seen: Seen[] = [];

beforeAll(async () => {
  upstream = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    const entry: Seen = { method: req.method!, url: req.url!, headers: req.headers, rawHeaders: req.rawHeaders, bodyLength: 0, complete: false };
    seen.push(entry);
    req.on('close', () => (entry.bodyLength = Buffer.concat(chunks).length));
    req.on('end', () => {
      entry.complete = true;
      entry.bodyLength = Buffer.concat(chunks).length;
      if (req.method === 'HEAD') {
        res.writeHead(200, { 'Content-Length': BODY.length, ETag: '"x"' });
        res.end();
      } else if (req.method === 'PUT') {
        res.writeHead(200, { ETag: `"${createHash('md5').update(Buffer.concat(chunks)).digest('hex')}"`, 'Content-Length': 0 });
        res.end();
      } else {
        res.writeHead(200, { 'Content-Length': BODY.length, 'x-amz-meta-test': 'yes' });
        res.end(BODY);
      }
    });
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
  upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
});
afterAll(async () => {
  upstream.closeAllConnections();
  await new Promise((r) => upstream.close(r));
});

let proxy: FaultProxy;
afterEach(async () => {
  await proxy?.close();
  seen.length = 0;
});

interface Reply {
  status?: number;
  headers?: http.IncomingHttpHeaders;
  body: Buffer;
  error?: string;
  ms: number;
}

/** One request with a fresh connection; resolves with whatever happened (never rejects). */
function request(method: string, path: string, opts: { body?: Buffer; headers?: Record<string, string>; timeoutMs?: number } = {}): Promise<Reply> {
  const started = Date.now();
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let reply: Reply | undefined;
    const finish = (r: Partial<Reply>) => {
      if (reply) return;
      reply = { body: Buffer.concat(chunks), ms: Date.now() - started, ...r };
      resolve(reply);
    };
    const req = http.request(`${proxy.url}${path}`, { method, agent: false, headers: opts.headers });
    req.setTimeout(opts.timeoutMs ?? 3000, () => req.destroy(Object.assign(new Error('client timeout'), { code: 'CLIENT_TIMEOUT' })));
    let response: http.IncomingMessage | undefined;
    req.on('error', (e: NodeJS.ErrnoException) =>
      finish({ error: e.code ?? e.message, ...(response ? { status: response.statusCode, headers: response.headers } : {}) }),
    );
    req.on('response', (res) => {
      response = res;
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', (e: NodeJS.ErrnoException) => finish({ status: res.statusCode, headers: res.headers, error: e.code ?? e.message }));
      res.on('end', () => finish({ status: res.statusCode, headers: res.headers }));
      res.on('close', () => {
        if (!res.complete) finish({ status: res.statusCode, headers: res.headers, error: 'incomplete' });
      });
    });
    req.end(opts.body);
  });
}

describe('fault proxy', () => {
  it('forwards requests untouched, Host header included', async () => {
    proxy = await FaultProxy.start({ upstream: upstreamUrl });
    const r = await request('PUT', '/bucket/a%2Fb?x-id=PutObject', {
      body: BODY,
      headers: { Host: 'signed-host.example:1234', 'X-Amz-Date': '20250101T000000Z', 'Content-MD5': 'abc' },
    });
    expect(r.status).toBe(200);
    expect(seen).toHaveLength(1);
    expect(seen[0]!.url).toBe('/bucket/a%2Fb?x-id=PutObject');
    expect(seen[0]!.headers.host).toBe('signed-host.example:1234');
    expect(seen[0]!.headers['x-amz-date']).toBe('20250101T000000Z');
    expect(seen[0]!.headers['content-md5']).toBe('abc');
    expect(seen[0]!.bodyLength).toBe(BODY.length);
    const g = await request('GET', '/bucket/key');
    expect(g.body.equals(BODY)).toBe(true);
    expect(g.headers?.['x-amz-meta-test']).toBe('yes');
    expect(proxy.stats()).toMatchObject({ requests: 2, faults: 0 });
  });

  it('answers S3 XML errors for the first N matching requests only', async () => {
    proxy = await FaultProxy.start({ upstream: upstreamUrl });
    const rule = proxy.addRule({ method: 'GET', path: /\/key1$/, first: 2, action: fault.slowDown() });
    proxy.addRule({ method: 'GET', path: /\/key2$/, nth: [2], action: fault.internalError() });
    proxy.addRule({ method: 'HEAD', action: fault.accessDenied() });
    const a = await request('GET', '/b/key1');
    expect(a.status).toBe(503);
    expect(a.body.toString()).toMatch(/<Code>SlowDown<\/Code>/);
    expect((await request('GET', '/b/key1')).status).toBe(503);
    expect((await request('GET', '/b/key1')).status).toBe(200);
    expect((await request('GET', '/b/key2')).status).toBe(200);
    const c = await request('GET', '/b/key2');
    expect(c.status).toBe(500);
    expect(c.body.toString()).toMatch(/<Code>InternalError<\/Code>/);
    const h = await request('HEAD', '/b/key1');
    expect(h.status).toBe(403);
    expect(rule).toMatchObject({ matched: 3, injected: 2 });
    expect(proxy.stats().faults).toBe(4);
    expect(seen.filter((s) => s.url === '/b/key1')).toHaveLength(1); // faulted requests never reached the store
  });

  it('resets before forwarding, mid request body, mid response body and after the store answered', async () => {
    proxy = await FaultProxy.start({ upstream: upstreamUrl });
    proxy.addRule({ path: /before/, action: fault.reset('before') });
    proxy.addRule({ path: /reqbody/, action: fault.reset('request-body', 1000) });
    proxy.addRule({ path: /resbody/, action: fault.reset('response-body', 1000) });
    proxy.addRule({ path: /after/, action: fault.reset('after') });

    const before = await request('GET', '/b/before');
    expect(before.error).toMatch(/ECONNRESET|socket hang up/);
    expect(seen).toHaveLength(0);

    const reqBody = await request('PUT', '/b/reqbody', { body: BODY });
    expect(reqBody.status).toBeUndefined();
    expect(reqBody.error).toMatch(/ECONNRESET|EPIPE|socket hang up/);
    await new Promise((r) => setTimeout(r, 100));
    expect(seen.find((s) => s.url === '/b/reqbody')).toMatchObject({ complete: false });

    const resBody = await request('GET', '/b/resbody');
    expect(resBody.status).toBe(200);
    expect(resBody.error).toBeDefined();
    expect(resBody.body.length).toBeLessThanOrEqual(1000);

    const after = await request('PUT', '/b/after', { body: BODY });
    expect(after.status).toBeUndefined();
    expect(after.error).toMatch(/ECONNRESET|socket hang up/);
    expect(seen.find((s) => s.url === '/b/after')).toMatchObject({ complete: true, bodyLength: BODY.length });
  });

  it('stalls without a byte, after the store answered, and mid-body; close() ends stalled sockets', async () => {
    proxy = await FaultProxy.start({ upstream: upstreamUrl });
    proxy.addRule({ path: /nobytes/, action: fault.stall('before') });
    proxy.addRule({ path: /midbody/, action: fault.stall('response-body', 4096) });
    const a = await request('GET', '/b/nobytes', { timeoutMs: 300 });
    expect(a.error).toBe('CLIENT_TIMEOUT');
    expect(seen).toHaveLength(0);
    const b = await request('GET', '/b/midbody', { timeoutMs: 300 });
    expect(b.status).toBe(200);
    expect(b.body.length).toBe(4096);
    expect(b.error).toBeDefined();

    // A stalled request with no client timeout ends when the proxy closes.
    const pending = request('GET', '/b/nobytes', { timeoutMs: 60_000 });
    await proxy.waitForRequest((r) => r.id === 3);
    const t = Date.now();
    await proxy.close();
    const c = await pending;
    expect(c.error).toBeDefined();
    expect(Date.now() - t).toBeLessThan(2000);
  });

  it('truncates and flips response bodies without changing Content-Length', async () => {
    proxy = await FaultProxy.start({ upstream: upstreamUrl });
    proxy.addRule({ path: /trunc/, action: fault.truncate(1234) });
    proxy.addRule({ path: /\/flip$/, action: fault.flip(100, 3) });
    const t = await request('GET', '/b/trunc');
    expect(t.status).toBe(200);
    expect(Number(t.headers?.['content-length'])).toBe(BODY.length);
    expect(t.body.length).toBe(1234);
    expect(t.error).toBeDefined();
    const f = await request('GET', '/b/flip');
    expect(f.error).toBeUndefined();
    expect(f.body.length).toBe(BODY.length);
    const diff = [...f.body.keys()].filter((i) => f.body[i] !== BODY[i]);
    expect(diff).toEqual([100, 101, 102]);

    // Request side: the store receives altered bytes (what Content-MD5 exists to catch).
    proxy.addRule({ method: 'PUT', path: /flipreq/, action: fault.flip(10, 1, 'request') });
    const p = await request('PUT', '/b/flipreq', { body: BODY });
    const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');
    const altered = Buffer.from(BODY);
    altered[10]! ^= 0xff;
    expect(p.headers?.etag).toBe(`"${md5(altered)}"`);
    expect(seen.at(-1)).toMatchObject({ bodyLength: BODY.length, complete: true });
  });

  it('delays, and picks probabilistic faults reproducibly from its seed', async () => {
    proxy = await FaultProxy.start({ upstream: upstreamUrl, seed: 42 });
    proxy.addRule({ path: /slow/, action: fault.delay(300) });
    const d = await request('GET', '/b/slow');
    expect(d.status).toBe(200);
    expect(d.ms).toBeGreaterThanOrEqual(280);

    const rule = proxy.addRule({ path: /rand/, probability: 0.3, action: fault.slowDown() });
    const statuses: number[] = [];
    for (let i = 0; i < 40; i++) statuses.push((await request('GET', '/b/rand')).status!);
    const rnd = seededRandom(42);
    const expected = Array.from({ length: 40 }, () => (rnd() < 0.3 ? 503 : 200));
    expect(statuses).toEqual(expected);
    expect(rule.injected).toBe(expected.filter((s) => s === 503).length);
    expect(rule.injected).toBeGreaterThan(3);
    expect(rule.injected).toBeLessThan(25);
  });

  it('answers 404 as a web server or gateway would: HTML page, empty body, another S3 code', async () => {
    proxy = await FaultProxy.start({ upstream: upstreamUrl });
    proxy.addRule({ path: /html/, action: fault.html404() });
    proxy.addRule({ path: /empty/, action: fault.empty404() });
    proxy.addRule({ path: /other/, action: fault.status(404, 'NoSuchWebsiteConfiguration') });
    proxy.addRule({ path: /page200/, action: fault.htmlPage() });
    proxy.addRule({ path: /text/, action: fault.text404() });

    const h = await request('GET', '/b/html');
    expect(h.status).toBe(404);
    expect(h.headers?.['content-type']).toBe('text/html');
    expect(h.body.toString()).toMatch(/<title>404 Not Found<\/title>/);
    expect(h.body.toString()).not.toMatch(/<Code>/);
    const hh = await request('HEAD', '/b/html');
    expect(hh.status).toBe(404);
    expect(hh.headers?.['content-type']).toBe('text/html');
    expect(hh.body.length).toBe(0);

    const e = await request('GET', '/b/empty');
    expect(e.status).toBe(404);
    expect(e.headers?.['content-length']).toBe('0');
    expect(e.headers?.['content-type']).toBeUndefined();
    expect(e.body.length).toBe(0);

    const o = await request('GET', '/b/other');
    expect(o.status).toBe(404);
    expect(o.headers?.['content-type']).toBe('application/xml');
    expect(o.body.toString()).toMatch(/<Code>NoSuchWebsiteConfiguration<\/Code>/);

    const tx = await request('GET', '/b/text');
    expect(tx.status).toBe(404);
    expect(tx.headers?.['content-type']).toBe('text/plain; charset=utf-8');
    expect(tx.body.toString()).toBe('404 page not found\n');

    const p = await request('GET', '/b/page200');
    expect(p.status).toBe(200);
    expect(p.body.toString()).toMatch(/<title>200 OK<\/title>/);
    expect(seen).toHaveLength(0); // none reached the store
    expect(proxy.stats().byAction).toMatchObject({ 'status 404 html': 2, 'status 404 empty': 1, 'status 404 NoSuchWebsiteConfiguration': 1, 'status 404 text': 1 });
  });

  it('SigV4: the signer reproduces the AWS documentation examples', () => {
    const base = { secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY', scope: '20130524/us-east-1/s3/aws4_request' };
    const empty = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
    const host = ['Host', 'examplebucket.s3.amazonaws.com', 'x-amz-content-sha256', empty, 'x-amz-date', '20130524T000000Z'];
    const signed = ['host', 'x-amz-content-sha256', 'x-amz-date'];
    expect(sigV4Signature({ ...base, method: 'GET', url: '/test.txt', rawHeaders: [...host, 'Range', 'bytes=0-9'], signedHeaders: [...signed, 'range'] })).toBe(
      'f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41',
    );
    expect(sigV4Signature({ ...base, method: 'GET', url: '/?lifecycle', rawHeaders: host, signedHeaders: signed })).toBe(
      'fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543',
    );
    expect(sigV4Signature({ ...base, method: 'GET', url: '/?max-keys=2&prefix=J', rawHeaders: host, signedHeaders: signed })).toBe(
      '34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7',
    );
    const put = ['Host', 'examplebucket.s3.amazonaws.com', 'Date', 'Fri, 24 May 2013 00:00:00 GMT', 'x-amz-date', '20130524T000000Z',
      'x-amz-storage-class', 'REDUCED_REDUNDANCY', 'x-amz-content-sha256', '44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072'];
    expect(
      sigV4Signature({ ...base, method: 'PUT', url: '/test%24file.text', rawHeaders: put, signedHeaders: ['date', 'host', 'x-amz-content-sha256', 'x-amz-date', 'x-amz-storage-class'] }),
    ).toBe('98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd');
  });

  it('strip-header forwards without the header, signed again; refuses without the secret', async () => {
    proxy = await FaultProxy.start({ upstream: upstreamUrl });
    expect(() => proxy.addRule({ method: 'PUT', action: fault.ignoreIfNoneMatch() })).toThrow(/secretAccessKey/);
    await proxy.close();

    const secret = 'test-secret-key';
    proxy = await FaultProxy.start({ upstream: upstreamUrl, secretAccessKey: secret });
    proxy.addRule({ method: 'PUT', action: fault.ignoreIfNoneMatch() });
    const scope = '20250101/us-east-1/s3/aws4_request';
    const headers: Record<string, string> = {
      Host: 'signed-host.example:1234',
      'If-None-Match': '*',
      'x-amz-content-sha256': createHash('sha256').update(BODY).digest('hex'),
      'x-amz-date': '20250101T000000Z',
    };
    const url = '/bucket/wal/a%2Bb?x-id=PutObject';
    const original = sigV4Signature({
      method: 'PUT',
      url,
      rawHeaders: Object.entries(headers).flat(),
      signedHeaders: ['host', 'if-none-match', 'x-amz-content-sha256', 'x-amz-date'],
      secretAccessKey: secret,
      scope,
    });
    headers.Authorization = `AWS4-HMAC-SHA256 Credential=AKID/${scope}, SignedHeaders=host;if-none-match;x-amz-content-sha256;x-amz-date, Signature=${original}`;
    const r = await request('PUT', url, { body: BODY, headers });
    expect(r.status).toBe(200);
    const got = seen.at(-1)!;
    expect(got.headers['if-none-match']).toBeUndefined();
    expect(got.headers.host).toBe('signed-host.example:1234');
    expect(got.bodyLength).toBe(BODY.length);
    const auth = /Credential=AKID\/([^,]+), SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$/.exec(String(got.headers.authorization));
    expect(auth?.[1]).toBe(scope);
    expect(auth?.[2]).toBe('host;x-amz-content-sha256;x-amz-date');
    expect(auth?.[3]).not.toBe(original);
    const expected = sigV4Signature({
      method: 'PUT',
      url,
      rawHeaders: got.rawHeaders,
      signedHeaders: ['host', 'x-amz-content-sha256', 'x-amz-date'],
      secretAccessKey: secret,
      scope,
    });
    expect(auth?.[3]).toBe(expected);
    // Other methods pass untouched.
    await request('GET', '/bucket/key', { headers: { 'If-None-Match': '"abc"' } });
    expect(seen.at(-1)!.headers['if-none-match']).toBe('"abc"');
  });
});
