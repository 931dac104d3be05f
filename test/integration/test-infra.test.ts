// Smoke test of the test infrastructure itself: if this fails, every other integration test's
// failure is suspect. It checks the store behaviour the suite depends on (conditional writes on
// rgw, 501 on Swift) and a PostgreSQL round trip with 1 MiB WAL segments.
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { FaultProxy } from '../support/fault-proxy.js';
import { PgCluster } from '../support/pg.js';
import { createTestBucket, getRaw, headRaw, listKeys, putRaw, s3ClientFor, testStores } from '../support/stores.js';

const stores = testStores();

describe('test stores', () => {
  it('are provided', () => {
    expect(stores.length).toBeGreaterThan(0);
  });

  describe.each(stores.map((s) => [s.name, s] as const))('%s', (_name, store) => {
    it('round-trips a 1 MiB object with metadata and answers If-None-Match as expected', async () => {
      const bucket = await createTestBucket(store, 'infra');
      const body = randomBytes(1024 * 1024);
      await putRaw(store, bucket, 'dir/obj', body, { 'wv-sha256': 'abc', 'wv-size': String(body.length) });

      const got = await getRaw(store, bucket, 'dir/obj');
      expect(got?.body.equals(body)).toBe(true);
      expect(got?.metadata).toMatchObject({ 'wv-sha256': 'abc', 'wv-size': '1048576' });
      expect((await headRaw(store, bucket, 'dir/obj'))?.size).toBe(body.length);
      expect(await getRaw(store, bucket, 'missing')).toBeNull();
      expect(await listKeys(store, bucket, 'dir/')).toEqual(['dir/obj']);

      const conditional = s3ClientFor(store).send(
        new PutObjectCommand({ Bucket: bucket, Key: 'dir/obj', Body: Buffer.from('other'), IfNoneMatch: '*' }),
      );
      if (store.conditionalWrites) {
        await expect(conditional).rejects.toMatchObject({ $metadata: { httpStatusCode: 412 } });
      } else {
        await expect(conditional).rejects.toMatchObject({ name: 'NotImplemented', $metadata: { httpStatusCode: 501 } });
      }
      expect((await getRaw(store, bucket, 'dir/obj'))?.body.equals(body)).toBe(true);
    });

    it("the fault proxy forwards the store's answer to HEAD / whole (radosgw adds a body to it)", async () => {
      const answers: string[] = [];
      for (let i = 0; i < 10; i++) {
        const proxy = await FaultProxy.start({ upstream: store.endpoint });
        try {
          answers.push(
            await new Promise<string>((resolve) => {
              const req = http.request(proxy.url, { method: 'HEAD', path: '/', agent: false }, (res) => {
                res.resume();
                resolve(`HTTP ${res.statusCode}`);
              });
              req.on('error', (e: NodeJS.ErrnoException) => resolve(`${e.code}`));
              req.end();
            }),
          );
        } finally {
          await proxy.close();
        }
      }
      expect(answers.filter((a) => !a.startsWith('HTTP '))).toEqual([]);
    });
  });
});

describe('PgCluster', () => {
  it('creates, starts, queries, stops and destroys a cluster with 1 MiB WAL segments', async () => {
    const pg = await PgCluster.create({ walSegSizeMb: 1 });
    try {
      await pg.start();
      expect(await pg.query('select 1')).toBe('1');
      expect(await pg.query('show wal_segment_size')).toBe('1MB');
      expect(await pg.query('show fsync')).toBe('on');
      await pg.stop();
      expect(await pg.isRunning()).toBe(false);
    } finally {
      await pg.destroy();
    }
  });
});
