// S3Client construction: checksum mode, timeouts, keep-alive agents, custom CA, and the Content-MD5
// middleware that Swift and older MinIO/Ceph need (see /work/shared/research/s3-servers.md).
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { createSecureContext, rootCertificates } from 'node:tls';
import { S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import type { BuildHandlerArguments, BuildMiddleware, MetadataBearer } from '@smithy/types';
import { configError } from '../../common/errors.js';
import type { S3Options } from './options.js';

/** Commands whose buffered body gets a Content-MD5 header when the caller did not set one. */
const MD5_COMMANDS = new Set(['PutObjectCommand', 'UploadPartCommand', 'DeleteObjectsCommand', 'PutObjectRetentionCommand']);

/** base64 MD5, the value of a Content-MD5 header. */
export function contentMd5(body: Uint8Array | string): string {
  return createHash('md5').update(body).digest('base64');
}

interface MutableRequest {
  headers: Record<string, string>;
  body?: unknown;
}

function asRequest(r: unknown): MutableRequest | undefined {
  if (typeof r !== 'object' || r === null) return undefined;
  const headers = (r as { headers?: unknown }).headers;
  return typeof headers === 'object' && headers !== null ? (r as MutableRequest) : undefined;
}

/**
 * Build-step middleware: computes Content-MD5 for Buffer/string bodies of PutObject, UploadPart and
 * DeleteObjects when absent. The SDK (>= 3.729) sends only CRC32 for DeleteObjects, which Swift
 * rejects (400 "Missing required header ... Content-MD5"); radosgw and Swift verify Content-MD5 on
 * PUT (400 BadDigest) but store a wrong x-amz-checksum-* silently. Streamed bodies are left alone.
 */
export const contentMd5Middleware: BuildMiddleware<object, MetadataBearer> =
  (next, context) => async (args: BuildHandlerArguments<object>) => {
    const req = asRequest(args.request);
    if (req && MD5_COMMANDS.has(String(context.commandName))) {
      const has = Object.keys(req.headers).some((h) => h.toLowerCase() === 'content-md5');
      const body = req.body;
      if (!has && (typeof body === 'string' || body instanceof Uint8Array)) {
        req.headers['content-md5'] = contentMd5(body);
      }
    }
    return next(args);
  };

/** Reads the PEM bundle; the result extends (not replaces) Node's built-in root certificates. */
export function loadCa(file: string): string[] {
  let pem: string;
  try {
    pem = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'EUNKNOWN';
    throw configError(`cannot read the S3 CA bundle ${file}: ${code}`, { cause: e });
  }
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) {
    throw configError(`the S3 CA bundle ${file} contains no PEM certificate`);
  }
  return [...rootCertificates, pem];
}

/** Everything the driver needs from client construction. */
export interface BuiltClient {
  client: S3Client;
  /** Sockets kept alive between calls; destroyed by client.destroy(). */
  agents: { http: http.Agent; https: https.Agent };
}

export function buildClientConfig(opts: S3Options): { config: S3ClientConfig; agents: BuiltClient['agents'] } {
  const ca = opts.caBundle ? loadCa(opts.caBundle) : undefined;
  // Agent instances (not options) make the handler treat them as external: it then reuses them
  // for every request instead of creating a throw-away agent (without our CA) for
  // Expect: 100-continue uploads.
  const agents = {
    http: new http.Agent({ keepAlive: true, maxSockets: 50 }),
    // One TLS context for all connections: given `ca`, every connection would parse the ~150 root
    // certificates into a store of its own (~1 MiB and ~10 ms of CPU each; a look-ahead batch opens 9).
    https: new https.Agent({ keepAlive: true, maxSockets: 50, ...(ca ? { secureContext: createSecureContext({ ca }) } : {}) }),
  };
  const checksum = opts.checksumMode === 'when_supported' ? 'WHEN_SUPPORTED' : 'WHEN_REQUIRED';
  const config: S3ClientConfig = {
    maxAttempts: 1, // walvault retries with its own policy (src/common/retry.ts)
    forcePathStyle: opts.forcePathStyle,
    requestChecksumCalculation: checksum,
    responseChecksumValidation: checksum,
    // With external agents the handler sends the body without waiting for "100 Continue", so the
    // header would only add a code path to the wire for nothing.
    expectContinueHeader: false,
    requestHandler: {
      connectionTimeout: opts.connectTimeoutMs,
      // The idle timeout is socketTimeout: no bytes either way for that long, also mid-body of a
      // GetObject response. requestTimeout is NOT used for it: in @smithy/node-http-handler 4.x it
      // runs from the start of a request until the response headers, i.e. across the whole upload
      // of a PUT body (measured on loopback radosgw: a 64 MiB PUT that needs ~290 ms fails with
      // requestTimeout 100 ms and succeeds with socketTimeout 300 ms), so it would kill slow but
      // progressing uploads.
      // The per-attempt and overall deadlines come from the caller's AbortSignal.
      socketTimeout: opts.idleTimeoutMs,
      throwOnRequestTimeout: true,
      httpAgent: agents.http,
      httpsAgent: agents.https,
    },
  };
  if (opts.endpoint) config.endpoint = opts.endpoint;
  const region = opts.region ?? (opts.endpoint ? 'us-east-1' : undefined);
  if (region) config.region = region;
  if (opts.profile) config.profile = opts.profile;
  if (opts.accessKeyId && opts.secretAccessKey) {
    config.credentials = {
      accessKeyId: opts.accessKeyId,
      secretAccessKey: opts.secretAccessKey,
      ...(opts.sessionToken ? { sessionToken: opts.sessionToken } : {}),
    };
  } else if (opts.accessKeyId || opts.secretAccessKey) {
    throw configError('S3 static credentials need both an access key id and a secret access key');
  }
  return { config, agents };
}

export function createS3Client(opts: S3Options): BuiltClient {
  const { config, agents } = buildClientConfig(opts);
  const client = new S3Client(config);
  client.middlewareStack.add(contentMd5Middleware, {
    step: 'build',
    name: 'walvaultContentMd5',
    priority: 'low',
  });
  return { client, agents };
}
