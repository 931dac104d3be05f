// What `walvault check` asks an S3 store, below the Storage interface: can the endpoint be reached
// (and its certificate trusted), what does its clock say, do the credentials work on the bucket,
// does it enforce If-None-Match. Each answer is a finding with the fix; the wording of the common
// store answers lives here, next to the SDK that produces them.
import http from 'node:http';
import https from 'node:https';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { describe } from '../../common/errors.js';
import { loadCa, createS3Client } from './client.js';
import { noteSupport, type ConditionalSupport } from './capabilities.js';
import { probeConditionalWrites } from './conditional.js';
import { storeIdOf, writeParamsFor } from './driver.js';
import { lockFields } from './object-lock.js';
import { describeFailure, errorCode, httpStatus, type S3Op } from './errors.js';
import { checkListing } from './lookup.js';
import { trimSlashes } from './meta.js';
import type { S3Options } from './options.js';

export type FindingStatus = 'ok' | 'warn' | 'fail' | 'skip';
export interface Finding {
  status: FindingStatus;
  detail: string;
  fix?: string;
}

/** The endpoint walvault talks to: the configured one, or AWS's regional endpoint. */
export function endpointOf(opts: Pick<S3Options, 'endpoint' | 'region'>): URL {
  return new URL(opts.endpoint ?? `https://s3.${opts.region ?? 'us-east-1'}.amazonaws.com`);
}

export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h);
}

const TLS_FIX: Record<string, string> = {
  SELF_SIGNED_CERT_IN_CHAIN: 'set s3CaBundle (--s3-ca-bundle) to the PEM file of the CA that signed the endpoint certificate',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'the endpoint uses a self-signed certificate: set s3CaBundle (--s3-ca-bundle) to it',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'set s3CaBundle (--s3-ca-bundle) to the PEM file of the CA that signed the endpoint certificate (or install the intermediate certificates on the server)',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'set s3CaBundle (--s3-ca-bundle) to the PEM file of the CA that signed the endpoint certificate',
  CERT_HAS_EXPIRED: 'the endpoint certificate has expired: renew it on the server',
  CERT_NOT_YET_VALID: 'the endpoint certificate is not valid yet: check the clock here and on the server',
  ERR_TLS_CERT_ALTNAME_INVALID: 'the certificate does not name this host: use the host name the certificate was issued for in s3Endpoint',
};
const NET_FIX: Record<string, string> = {
  ECONNREFUSED: 'nothing listens there: check the host and port of s3Endpoint and that the store is running',
  ENOTFOUND: 'the host name does not resolve: check s3Endpoint (and DNS)',
  EAI_AGAIN: 'the host name could not be resolved now: check DNS',
  ETIMEDOUT: 'no answer: check s3Endpoint, firewalls and proxies',
  EHOSTUNREACH: 'no route to the host: check s3Endpoint and the network',
  ENETUNREACH: 'no route to the network: check s3Endpoint and the network',
  ECONNRESET: 'the connection was reset: is this an S3 endpoint, and http vs https right?',
  EPROTO: 'the TLS handshake failed: is the endpoint https, and the port right?',
};

export interface EndpointAnswer {
  endpoint: Finding;
  /** The Date header of the answer and the local time halfway through the request. */
  clock?: { server: Date; local: Date };
}

/**
 * One anonymous HEAD / to the endpoint: reachability, TLS (with the configured CA bundle, as the
 * driver trusts it) and the server's Date. Any HTTP answer (403 included) means reachable.
 */
export async function probeEndpoint(opts: S3Options, timeoutMs: number): Promise<EndpointAnswer> {
  const first = await headEndpoint(opts, timeoutMs);
  // A network failure gets one more try, as every storage call gets retries; a TLS verdict does not change.
  if (first.endpoint.status !== 'fail' || !first.retry) return first;
  await new Promise((r) => setTimeout(r, 200));
  return headEndpoint(opts, timeoutMs);
}

function headEndpoint(opts: S3Options, timeoutMs: number): Promise<EndpointAnswer & { retry?: boolean }> {
  const url = endpointOf(opts);
  const secure = url.protocol === 'https:';
  const origin = `${url.protocol}//${url.host}`;
  if (!secure && url.protocol !== 'http:') {
    return Promise.resolve({ endpoint: { status: 'fail', detail: `${origin}: unknown protocol ${url.protocol}`, fix: 'use an http:// or https:// s3Endpoint' } });
  }
  let ca: string[] | undefined;
  try {
    ca = secure && opts.caBundle ? loadCa(opts.caBundle) : undefined;
  } catch (e) {
    return Promise.resolve({ endpoint: { status: 'fail', detail: describe(e), fix: 'fix s3CaBundle' } });
  }
  const started = Date.now();
  return new Promise((resolve) => {
    const req = (secure ? https : http).request(url, { method: 'HEAD', path: '/', timeout: timeoutMs, ...(ca ? { ca } : {}), agent: false }, (res) => {
      res.resume();
      const ms = Date.now() - started;
      const date = res.headers.date ? new Date(res.headers.date) : undefined;
      const local = new Date(started + ms / 2);
      const socket = res.socket as { getProtocol?: () => string | null; getPeerCertificate?: () => { valid_to?: string; subject?: { CN?: string } } };
      let detail = `${origin} answered HTTP ${res.statusCode} in ${ms} ms`;
      let status: FindingStatus = 'ok';
      let fix: string | undefined;
      if (secure) {
        const cert = socket.getPeerCertificate?.();
        detail += `; ${socket.getProtocol?.() ?? 'TLS'}, certificate${cert?.subject?.CN ? ` for ${cert.subject.CN}` : ''} trusted${cert?.valid_to ? `, valid until ${new Date(cert.valid_to).toISOString().slice(0, 10)}` : ''}`;
      } else if (isLoopback(url.hostname)) {
        detail += '; plain http on loopback (not encrypted, not leaving this host)';
      } else {
        status = 'warn';
        detail += '; plain http: WAL, backups and the request signatures cross the network unencrypted';
        fix = 'use an https:// endpoint';
      }
      resolve({ endpoint: { status, detail, ...(fix ? { fix } : {}) }, ...(date && !Number.isNaN(date.getTime()) ? { clock: { server: date, local } } : {}) });
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { code: 'ETIMEDOUT' })));
    req.on('error', (e: NodeJS.ErrnoException) => {
      const code = e.code ?? 'UnknownError';
      const tls = TLS_FIX[code] ?? (/CERT|SSL|TLS/.test(code) ? 'the endpoint certificate is not trusted: set s3CaBundle (--s3-ca-bundle)' : undefined);
      const what = tls ? `the TLS certificate of ${origin} is not trusted: ${code} (${e.message.replace(/;.*$/, '')})` : `${origin} cannot be reached: ${code}${e.message && !e.message.includes(code) ? ` (${e.message})` : ''}`;
      resolve({ endpoint: { status: 'fail', detail: what, fix: tls ?? NET_FIX[code] ?? 'check s3Endpoint and the network' }, retry: !tls });
    });
    req.end();
  });
}

/** Clock skew from the endpoint's Date (whole seconds): SigV4 refuses requests more than 15 minutes off. */
export function clockFinding(clock: { server: Date; local: Date } | undefined): Finding {
  if (!clock) return { status: 'warn', detail: 'the endpoint sent no Date header: the clock could not be compared', fix: 'keep this host synchronized (NTP)' };
  const skew = (clock.local.getTime() - clock.server.getTime()) / 1000;
  const abs = Math.abs(skew);
  const dir = skew > 0 ? 'ahead of' : 'behind';
  // Date has a resolution of one second.
  if (abs < 2) return { status: 'ok', detail: `local clock within 2 s of the store's (Date ${clock.server.toISOString()})` };
  const detail = `local clock ${abs.toFixed(0)} s ${dir} the store's (Date ${clock.server.toISOString()})`;
  if (abs > 300) return { status: 'fail', detail: `${detail}; the store refuses signed requests beyond 15 minutes, and file times and backup ages are off`, fix: 'synchronize this host\'s clock (NTP: chrony, systemd-timesyncd)' };
  if (abs > 30) return { status: 'warn', detail, fix: 'synchronize this host\'s clock (NTP: chrony, systemd-timesyncd)' };
  return { status: 'ok', detail };
}

const CREDENTIAL_FIX: Record<string, string> = {
  InvalidAccessKeyId: 'the store does not know this access key: check s3AccessKeyId (AWS_ACCESS_KEY_ID) or the profile',
  SignatureDoesNotMatch: 'the secret key does not match the access key: check s3SecretAccessKey (AWS_SECRET_ACCESS_KEY) or the profile',
  RequestTimeTooSkewed: 'this host\'s clock is too far from the store\'s: synchronize it (NTP)',
  InvalidToken: 'the session token is invalid: refresh the temporary credentials (s3SessionToken)',
  ExpiredToken: 'the temporary credentials have expired: refresh them',
  AccessDenied: 'the credentials may not list the bucket: grant s3:ListBucket on the bucket (and s3:GetObject, s3:PutObject, s3:DeleteObject on the prefix)',
};

export interface S3Diagnostics {
  /** One ListObjectsV2 of the prefix (MaxKeys 1): it needs the credentials, the bucket and s3:ListBucket. */
  access(signal: AbortSignal): Promise<{ credentials: Finding; bucket: Finding }>;
  /** Two conditional PUTs of a throw-away key under state/check/; the answer is remembered for wal-push. */
  conditionalWrites(signal: AbortSignal): Promise<Finding>;
  close(): void;
}

export function s3Diagnostics(opts: S3Options): S3Diagnostics {
  const { client } = createS3Client(opts);
  const prefix = trimSlashes(opts.prefix ?? '');
  const full = (k: string) => (prefix ? `${prefix}/${k}` : k);
  const url = `s3://${opts.bucket}${prefix ? `/${prefix}` : ''}`;
  return {
    async access(signal) {
      const where: S3Op = { op: 'ListObjectsV2', target: url };
      const skip: Finding = { status: 'skip', detail: 'not checked: the credentials failed' };
      try {
        const r = await client.send(new ListObjectsV2Command({ Bucket: opts.bucket, Prefix: full(''), MaxKeys: 1 }), { abortSignal: signal });
        checkListing(r, opts.bucket, where);
        const who = opts.accessKeyId ? `access key ${opts.accessKeyId.slice(0, 4)}****` : opts.profile ? `profile ${opts.profile}` : 'the SDK credential chain';
        return {
          credentials: { status: 'ok', detail: `${who} accepted (ListObjectsV2 of ${url} answered)` },
          bucket: { status: 'ok', detail: `bucket ${opts.bucket} exists and may be listed (${r.KeyCount ?? 0 ? 'the prefix holds objects' : 'the prefix is empty'})` },
        };
      } catch (e) {
        const code = errorCode(e);
        const status = httpStatus(e);
        const text = describeFailure(e, where);
        if (code === 'NoSuchBucket') {
          return {
            credentials: { status: 'ok', detail: `accepted (the store answered NoSuchBucket, not an authentication error)` },
            bucket: { status: 'fail', detail: `${text}: the bucket ${opts.bucket} does not exist at ${endpointOf(opts).host}`, fix: `create it (aws s3 mb s3://${opts.bucket}), or fix the bucket name, endpoint or region` },
          };
        }
        if (code === 'PermanentRedirect' || code === 'AuthorizationHeaderMalformed' || status === 301) {
          return {
            credentials: { status: 'ok', detail: 'accepted' },
            bucket: { status: 'fail', detail: `${text}: the bucket is in another region`, fix: 'set s3Region to the bucket\'s region' },
          };
        }
        if (CREDENTIAL_FIX[code] || status === 403) {
          return { credentials: { status: 'fail', detail: text, fix: CREDENTIAL_FIX[code] ?? CREDENTIAL_FIX['AccessDenied']! }, bucket: skip };
        }
        if (code === 'CredentialsProviderError' || /could not load credentials/i.test(describe(e))) {
          return { credentials: { status: 'fail', detail: `${text}: no credentials found`, fix: 'set s3AccessKeyId and s3SecretAccessKey, a profile (s3Profile), or the AWS_* variables' }, bucket: skip };
        }
        return { credentials: { status: 'fail', detail: text, fix: 'check s3Endpoint, the credentials and the bucket' }, bucket: skip };
      }
    },
    async conditionalWrites(signal) {
      const storeId = storeIdOf(opts);
      let support: ConditionalSupport;
      let detail: string;
      try {
        ({ support, detail } = await probeConditionalWrites(
          { client, bucket: opts.bucket, probePrefix: full('state/check/'), putParams: { ContentType: 'application/octet-stream', ...writeParamsFor(opts), ...lockFields(opts.objectLock) }, bucketUrl: `s3://${opts.bucket}` },
          signal,
        ));
      } catch (e) {
        return { status: 'fail', detail: `the If-None-Match probe failed: ${describe(e)}`, fix: 'grant s3:PutObject and s3:DeleteObject on the prefix' };
      }
      // The fresh answer replaces what wal-push remembered (the store may have changed).
      noteSupport(storeId, opts.capabilityFile, support);
      const mode = opts.conditionalWrites;
      if (support === 'enforced') {
        return { status: 'ok', detail: `a second PutObject with If-None-Match: * was refused with 412: wal-push never overwrites in one request${mode === 'off' ? ' (but s3ConditionalWrites is off: set it to auto)' : ''}` };
      }
      if (support === 'unsupported') {
        return {
          status: mode === 'on' ? 'fail' : 'warn',
          detail: `the store answers HTTP 501 NotImplemented to If-None-Match; walvault falls back to HEAD then PUT, which is not atomic (a second writer on the same prefix can slip in)`,
          fix: mode === 'on' ? 'set s3ConditionalWrites to auto (wal-push refuses this store with on)' : 'archive one cluster per prefix',
        };
      }
      return {
        status: 'fail',
        detail: `${detail}: the store accepts If-None-Match but overwrites anyway, so a conditional write can replace archived WAL`,
        fix: mode === 'on'
          ? 'use a store that enforces If-None-Match (wal-push refuses this one with s3ConditionalWrites on)'
          : 'use a store (or gateway) that enforces If-None-Match; meanwhile walvault (s3ConditionalWrites auto) uses HEAD then PUT, which is not atomic',
      };
    },
    close() {
      client.destroy();
    },
  };
}
