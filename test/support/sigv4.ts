// AWS Signature Version 4 for the fault proxy: a request whose headers the proxy changes (a store
// that ignores If-None-Match is simulated by dropping the header) must be signed again, or the store
// refuses it with SignatureDoesNotMatch. Only what S3 requests need: header-based auth, a payload
// hash taken from x-amz-content-sha256, a path used as sent (S3 does not normalise or re-encode it).
import { createHash, createHmac } from 'node:crypto';

const hmac = (key: Buffer | string, data: string) => createHmac('sha256', key).update(data).digest();
const sha256Hex = (data: string) => createHash('sha256').update(data).digest('hex');

/** RFC 3986 encoding, as SigV4 wants it (encodeURIComponent leaves !'()* alone). */
function escapeUri(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function canonicalQuery(query: string): string {
  if (!query) return '';
  const pairs = query
    .split('&')
    .filter((p) => p !== '')
    .map((p) => {
      const eq = p.indexOf('=');
      const k = decodeURIComponent(eq < 0 ? p : p.slice(0, eq));
      const v = eq < 0 ? '' : decodeURIComponent(p.slice(eq + 1).replace(/\+/g, '%20'));
      return [escapeUri(k), escapeUri(v)] as const;
    });
  pairs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  return pairs.map(([k, v]) => `${k}=${v}`).join('&');
}

/** Header name (lower case) → values in arrival order, from Node's rawHeaders pairs. */
function headerMap(raw: string[]): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const k = raw[i]!.toLowerCase();
    m.set(k, [...(m.get(k) ?? []), raw[i + 1]!]);
  }
  return m;
}

export interface SigV4Input {
  method: string;
  /** Path and query exactly as sent, e.g. `/bucket/a%2Fb?x-id=PutObject`. */
  url: string;
  /** Node rawHeaders pairs (name, value, name, value...). */
  rawHeaders: string[];
  /** Lower-case names, in the order they are signed. */
  signedHeaders: string[];
  secretAccessKey: string;
  /** `20130524/us-east-1/s3/aws4_request`. */
  scope: string;
}

/** The hex signature of a request (x-amz-date and x-amz-content-sha256 must be among its headers). */
export function sigV4Signature(r: SigV4Input): string {
  const headers = headerMap(r.rawHeaders);
  const q = r.url.indexOf('?');
  const path = q < 0 ? r.url : r.url.slice(0, q);
  const query = q < 0 ? '' : r.url.slice(q + 1);
  const names = [...r.signedHeaders].sort();
  const canonicalHeaders = names.map((n) => `${n}:${(headers.get(n) ?? []).map((v) => v.trim().replace(/\s+/g, ' ')).join(',')}\n`).join('');
  const payload = headers.get('x-amz-content-sha256')?.[0] ?? 'UNSIGNED-PAYLOAD';
  const canonical = [r.method.toUpperCase(), path, canonicalQuery(query), canonicalHeaders, names.join(';'), payload].join('\n');
  const amzDate = headers.get('x-amz-date')?.[0] ?? '';
  const toSign = ['AWS4-HMAC-SHA256', amzDate, r.scope, sha256Hex(canonical)].join('\n');
  const [date, region, service, terminal] = r.scope.split('/') as [string, string, string, string];
  const key = hmac(hmac(hmac(hmac(`AWS4${r.secretAccessKey}`, date), region), service), terminal);
  return createHmac('sha256', key).update(toSign).digest('hex');
}

const AUTH = /^AWS4-HMAC-SHA256\s+Credential=([^/,\s]+)\/([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*Signature=([0-9a-f]+)\s*$/;

/**
 * rawHeaders without `drop` (lower case), with the Authorization header signed again with `secret`
 * when the dropped header was signed. A request without SigV4 header auth just loses the header.
 */
export function dropHeaderAndResign(method: string, url: string, rawHeaders: string[], drop: string, secret: string): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) if (rawHeaders[i]!.toLowerCase() !== drop) out.push(rawHeaders[i]!, rawHeaders[i + 1]!);
  const authAt = out.findIndex((v, i) => i % 2 === 0 && v.toLowerCase() === 'authorization');
  const m = authAt < 0 ? null : AUTH.exec(out[authAt + 1]!);
  if (!m) return out;
  const [, accessKeyId, scope, signed] = m as unknown as [string, string, string, string];
  const signedHeaders = signed.split(';').filter((h) => h !== drop);
  const signature = sigV4Signature({ method, url, rawHeaders: out, signedHeaders, secretAccessKey: secret, scope });
  out[authAt + 1] = `AWS4-HMAC-SHA256 Credential=${accessKeyId}/${scope}, SignedHeaders=${signedHeaders.join(';')}, Signature=${signature}`;
  return out;
}
