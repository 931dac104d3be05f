// The If-None-Match probe (src/storage/s3/conditional.ts) against a small HTTP server playing an
// S3 bucket with Object Lock: PutObject without Content-MD5 (or a checksum) is refused with 400.
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { isWalvaultError } from '../../src/common/errors.js';
import { createS3Client } from '../../src/storage/s3/client.js';
import { conditionalWritesEnforced, probeConditionalWrites, type ConditionalContext } from '../../src/storage/s3/conditional.js';

interface Seen {
  method: string;
  url: string;
  md5?: string;
  md5Ok: boolean;
}
let seen: Seen[] = [];
/** The status the store answers to the probe's PUTs (after the Content-MD5 check); 0: behave. */
let putStatus = 0;
let server: http.Server;
let endpoint: string;
const clients: S3Client[] = [];
const xml = (code: string) => `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>m</Message></Error>`;

beforeAll(async () => {
  const stored = new Set<string>();
  server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const md5 = req.headers['content-md5'] as string | undefined;
      const md5Ok = md5 === createHash('md5').update(body).digest('base64');
      seen.push({ method: req.method!, url: req.url!, ...(md5 ? { md5 } : {}), md5Ok });
      const send = (status: number, text = '') => {
        res.writeHead(status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(text) });
        res.end(text);
      };
      if (req.method === 'PUT') {
        // Object Lock: "Content-MD5 OR x-amz-checksum- HTTP header is required for Put Object requests with Object Lock parameters"
        if (!md5Ok) return send(400, xml('InvalidRequest'));
        if (putStatus) return send(putStatus, xml(putStatus === 403 ? 'AccessDenied' : 'InvalidArgument'));
        if (req.headers['if-none-match'] === '*' && stored.has(req.url!)) return send(412, xml('PreconditionFailed'));
        stored.add(req.url!);
        return send(200);
      }
      if (req.method === 'DELETE') {
        stored.delete(req.url!);
        return send(204);
      }
      send(405, xml('MethodNotAllowed'));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  for (const c of clients) c.destroy();
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});
beforeEach(() => {
  seen = [];
  putStatus = 0;
});

/** A bare SDK client: whatever Content-MD5 the probe sends, it sends itself. */
function target(storeId: string): ConditionalContext {
  const client = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'a', secretAccessKey: 'b' }, maxAttempts: 1 });
  clients.push(client);
  return { client, bucket: 'b', probePrefix: 'p/state/probe/', putParams: {}, bucketUrl: 's3://b', repoUrl: 's3://b/p', storeId, mode: 'auto' };
}

describe('the If-None-Match probe', () => {
  it('trust: the conditional-write probe works on an Object Lock bucket (Content-MD5)', async () => {
    const r = await probeConditionalWrites(target('lock'));
    expect(r.support).toBe('enforced');
    const puts = seen.filter((s) => s.method === 'PUT');
    expect(puts).toHaveLength(2);
    for (const p of puts) expect(p.md5Ok, JSON.stringify(p)).toBe(true);
  });

  it("the driver's own client also sends Content-MD5 on the probe", async () => {
    const { client } = createS3Client({
      bucket: 'b', prefix: 'p', endpoint, region: 'us-east-1', forcePathStyle: true, accessKeyId: 'a', secretAccessKey: 'b',
      checksumMode: 'when_required', conditionalWrites: 'auto', connectTimeoutMs: 2000, idleTimeoutMs: 5000, partSize: 5 << 20, queueSize: 1,
    });
    clients.push(client);
    expect((await probeConditionalWrites({ ...target('driver'), client })).support).toBe('enforced');
    expect(seen.filter((s) => s.method === 'PUT').map((s) => s.md5Ok)).toEqual([true, true]);
  });

  it('trust: an unexpected probe answer falls back to HEAD then PUT in auto mode, and is not remembered', async () => {
    putStatus = 400;
    const t = target('odd');
    expect(await conditionalWritesEnforced(t)).toBe(false);
    const probes = seen.length;
    expect(probes).toBeGreaterThan(0);
    // The same process does not probe again (one warning), ...
    expect(await conditionalWritesEnforced(t)).toBe(false);
    expect(seen.length).toBe(probes);
    // ... but the answer is not remembered for the store: with 'on', the store is asked again, and
    // there the failure is the push's error.
    const on = await conditionalWritesEnforced({ ...t, mode: 'on' }).catch((e: unknown) => e);
    expect(isWalvaultError(on) && on.message).toMatch(/If-None-Match probe.*HTTP 400/);
    expect(seen.length).toBeGreaterThan(probes);
    // A store that behaves again is probed afresh by a later process (a fresh store identity here).
    putStatus = 0;
    expect(await conditionalWritesEnforced({ ...t, storeId: 'odd-later' })).toBe(true);
  });
});
