// S3 helper for scripts/bench/run.sh, using the repository's own @aws-sdk/client-s3.
//   node s3-tool.mjs mkbucket <bucket>
//   node s3-tool.mjs count <bucket> <prefix>            -> "<objects> <bytes>"
//   node s3-tool.mjs rmprefix <bucket> <prefix>
//   node s3-tool.mjs ciphers <bucket> <prefix>          -> "<objects> <objects whose metadata names a cipher>"
//   node s3-tool.mjs put <bucket> <prefix> <concurrency> <file>...
//   node s3-tool.mjs get <bucket> <prefix> <concurrency> <destdir> <name>...
// put/get are the "raw limit": one long-lived process, keep-alive sockets, one PutObject/GetObject
// per file (no compression, no hashing of our own; GET bodies are fsynced like a restore_command's
// output must be). They print one JSON line: {op, files, bytes, wall_s, max_rss_mib}.
// Endpoint and credentials: BENCH_S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; a
// self-signed endpoint certificate comes in through NODE_EXTRA_CA_CERTS.
import { open, readFile } from 'node:fs/promises';
import { Agent as HttpsAgent } from 'node:https';
import { Agent as HttpAgent } from 'node:http';
import { basename, join } from 'node:path';
import {
  CreateBucketCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { createHash } from 'node:crypto';

const [cmd, bucket, prefix = '', ...rest] = process.argv.slice(2);
const conc = Number(rest[0] ?? 4);
const s3 = new S3Client({
  endpoint: process.env.BENCH_S3_ENDPOINT,
  region: 'us-east-1',
  forcePathStyle: true,
  requestChecksumCalculation: 'WHEN_REQUIRED',
  responseChecksumValidation: 'WHEN_REQUIRED',
  requestHandler: {
    httpAgent: new HttpAgent({ keepAlive: true, maxSockets: Math.max(conc, 4) }),
    httpsAgent: new HttpsAgent({ keepAlive: true, maxSockets: Math.max(conc, 4) }),
  },
});

async function* list(p) {
  let token;
  do {
    const r = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: p, ContinuationToken: token }));
    for (const o of r.Contents ?? []) yield o;
    token = r.IsTruncated ? r.NextContinuationToken : undefined;
  } while (token);
}

async function pool(jobs, n) {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(n, jobs.length) }, async () => {
    while (next < jobs.length) await jobs[next++]();
  }));
}

const t0 = process.hrtime.bigint();
let bytes = 0;
switch (cmd) {
  case 'mkbucket':
    try {
      await s3.send(new HeadBucketCommand({ Bucket: bucket }));
    } catch {
      await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    }
    break;
  case 'count': {
    let n = 0;
    for await (const o of list(prefix)) {
      n++;
      bytes += o.Size ?? 0;
    }
    console.log(`${n} ${bytes}`);
    break;
  }
  case 'ciphers': {
    // walvault's metadata keys carry its own prefix: any key ending in "cipher" counts
    const keys = [];
    for await (const o of list(prefix)) keys.push(o.Key);
    let sealed = 0;
    await pool(
      keys.map((Key) => async () => {
        const h = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key }));
        if (Object.keys(h.Metadata ?? {}).some((k) => k.endsWith('cipher'))) sealed++;
      }),
      8,
    );
    console.log(`${keys.length} ${sealed}`);
    break;
  }
  case 'rmprefix': {
    const keys = [];
    for await (const o of list(prefix)) keys.push({ Key: o.Key });
    for (let i = 0; i < keys.length; i += 500) {
      const body = { Objects: keys.slice(i, i + 500), Quiet: true };
      // Content-MD5 for stores that insist on it (the SDK no longer sends it by itself)
      const cmdObj = new DeleteObjectsCommand({ Bucket: bucket, Delete: body });
      cmdObj.middlewareStack.add(
        (next) => async (args) => {
          const b = args.request.body;
          if (typeof b === 'string' || b instanceof Uint8Array) args.request.headers['content-md5'] = createHash('md5').update(b).digest('base64');
          return next(args);
        },
        { step: 'build', priority: 'low' },
      );
      await s3.send(cmdObj);
    }
    break;
  }
  case 'put': {
    const files = rest.slice(1);
    await pool(
      files.map((f) => async () => {
        const body = await readFile(f);
        await s3.send(new PutObjectCommand({ Bucket: bucket, Key: `${prefix}${basename(f)}`, Body: body }));
        bytes += body.length;
      }),
      conc,
    );
    report('put', files.length);
    break;
  }
  case 'get': {
    const [dest, ...names] = rest.slice(1);
    await pool(
      names.map((n) => async () => {
        const r = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: `${prefix}${n}` }));
        const buf = Buffer.from(await r.Body.transformToByteArray());
        const fh = await open(join(dest, n), 'w');
        await fh.writeFile(buf);
        await fh.sync();
        await fh.close();
        bytes += buf.length;
      }),
      conc,
    );
    report('get', names.length);
    break;
  }
  default:
    console.error('usage: s3-tool.mjs mkbucket|count|rmprefix|put|get ...');
    process.exit(2);
}
s3.destroy();

function report(op, files) {
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(JSON.stringify({ op, files, bytes, concurrency: conc, wall_s: +wall.toFixed(3), max_rss_mib: +(process.resourceUsage().maxRSS / 1024).toFixed(1) }));
}
