// A fault-injecting HTTP reverse proxy for tests: walvault talks to it as its S3 endpoint and it
// forwards every request, untouched, to the real store (radosgw, Swift), unless a rule says to
// misbehave. SigV4 signatures cover the Host header and the path, so requests are forwarded as raw
// as Node allows: same method, same path and query, same header names and values (Host included:
// the signature was computed for the proxy's host:port and the store checks it against the header,
// not against its own address). Only hop-by-hop headers (Connection, Keep-Alive) are dropped.
//
// Loopback only. Faults, per rule (first firing rule wins):
//   status    answer 500 InternalError / 503 SlowDown / 403 AccessDenied (S3 XML error body), or
//             any status, with an S3 XML error body, a web server's HTML page, a plain-text line or
//             an empty body (a proxy's or a misrouted gateway's 404); the request never reaches the store
//   strip-header  forward without one header (If-None-Match: a store that ignores conditional
//             writes), signed again with the proxy's secretAccessKey (SigV4 covers the header)
//   reset     TCP RST at 'before' (nothing forwarded), 'request-body' (part of the request body
//             forwarded, then both sides cut), 'response-body' (headers + part of the body sent),
//             'after' (the store processed the request; its response is dropped)
//   stall     accept and never answer: 'before' (not forwarded), 'after' (forwarded, processed,
//             response withheld), 'response-body' (headers + part of the body, then silence)
//   truncate  send the response headers (original Content-Length) and fewer bytes, then close
//   flip      XOR bytes of the response body, or of the request body (target 'request': what
//             Content-MD5 is for), lengths unchanged
//   delay     wait, then forward normally
// A rule matches on method, a regex over the request path+query, which matching request it is
// (first N, or an explicit list of 1-based indices) and a probability drawn from a seeded RNG,
// so random fault runs are reproducible. close() destroys every socket, stalled ones included.
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { Writable } from 'node:stream';
import { dropHeaderAndResign } from './sigv4.js';

/**
 * What an injected status carries: S3's XML error, a web server's HTML page (well-formed, so the
 * SDK parses it: the dangerous kind), a plain-text line (Go's `404 page not found`), or nothing.
 */
export type StatusBody = 'xml' | 'html' | 'text' | 'empty';

export type FaultAction =
  | { type: 'status'; status: number; code?: string; message?: string; body?: StatusBody }
  | { type: 'strip-header'; header: string }
  | { type: 'reset'; at: 'before' | 'request-body' | 'response-body' | 'after'; afterBytes?: number }
  | { type: 'stall'; at: 'before' | 'after' | 'response-body'; afterBytes?: number }
  | { type: 'truncate'; keepBytes?: number }
  | { type: 'flip'; offset?: number; count?: number; target?: 'response' | 'request' }
  | { type: 'delay'; ms: number };

export interface FaultRule {
  /** Shown in stats and logs; defaults to the action's description. */
  name?: string;
  /** HTTP method(s), case-insensitive; default any. */
  method?: string | string[];
  /** Tested against the request target as sent (path and query), e.g. /\/wal\/.*0003(\?|$)/. */
  path?: RegExp;
  /** Only the first N matching requests get the fault (later ones pass through). */
  first?: number;
  /** Only these matching requests (1-based) get the fault. */
  nth?: number[];
  /** Chance that a matching request gets the fault (seeded RNG); default 1. */
  probability?: number;
  action: FaultAction;
}

export interface RuleStats {
  name: string;
  /** Requests that matched method and path. */
  matched: number;
  /** Faults this rule injected. */
  injected: number;
}

export interface RuleHandle extends RuleStats {
  readonly rule: FaultRule;
}

export interface RequestRecord {
  id: number;
  method: string;
  url: string;
  /** Name of the rule that fired, if any. */
  fault?: string;
  /** Status the store answered (forwarded requests), or the injected status. */
  status?: number;
}

/** Canned S3 error answers. */
export const S3_ERRORS: Record<number, { code: string; message: string }> = {
  400: { code: 'BadRequest', message: 'Bad Request' },
  403: { code: 'AccessDenied', message: 'Access Denied' },
  404: { code: 'NoSuchKey', message: 'The specified key does not exist.' },
  429: { code: 'SlowDown', message: 'Please reduce your request rate.' },
  500: { code: 'InternalError', message: 'We encountered an internal error. Please try again.' },
  501: { code: 'NotImplemented', message: 'A header you provided implies functionality that is not implemented.' },
  503: { code: 'SlowDown', message: 'Please reduce your request rate.' },
};

/** Shorthands for the usual actions. */
export const fault = {
  status: (status: number, code?: string, message?: string): FaultAction => ({
    type: 'status',
    status,
    ...(code ? { code } : {}),
    ...(message ? { message } : {}),
  }),
  internalError: (): FaultAction => ({ type: 'status', status: 500 }),
  slowDown: (): FaultAction => ({ type: 'status', status: 503 }),
  accessDenied: (): FaultAction => ({ type: 'status', status: 403 }),
  /** A web server's (or a proxy's) own 404 page, as when the endpoint is not the store. */
  html404: (): FaultAction => ({ type: 'status', status: 404, body: 'html' }),
  /** A plain-text 404, as Go's net/http answers: not XML at all. */
  text404: (): FaultAction => ({ type: 'status', status: 404, body: 'text' }),
  /** A 404 with no body at all (a load balancer or gateway with no route). */
  empty404: (): FaultAction => ({ type: 'status', status: 404, body: 'empty' }),
  /** Any status with an HTML page, e.g. 200: a web server that answers everything. */
  htmlPage: (status = 200): FaultAction => ({ type: 'status', status, body: 'html' }),
  /** A store that accepts If-None-Match and ignores it (needs the proxy's secretAccessKey). */
  ignoreIfNoneMatch: (): FaultAction => ({ type: 'strip-header', header: 'if-none-match' }),
  reset: (at: 'before' | 'request-body' | 'response-body' | 'after', afterBytes?: number): FaultAction => ({
    type: 'reset',
    at,
    ...(afterBytes !== undefined ? { afterBytes } : {}),
  }),
  stall: (at: 'before' | 'after' | 'response-body' = 'before', afterBytes?: number): FaultAction => ({
    type: 'stall',
    at,
    ...(afterBytes !== undefined ? { afterBytes } : {}),
  }),
  truncate: (keepBytes?: number): FaultAction => ({ type: 'truncate', ...(keepBytes !== undefined ? { keepBytes } : {}) }),
  flip: (offset?: number, count?: number, target: 'response' | 'request' = 'response'): FaultAction => ({
    type: 'flip',
    target,
    ...(offset !== undefined ? { offset } : {}),
    ...(count !== undefined ? { count } : {}),
  }),
  delay: (ms: number): FaultAction => ({ type: 'delay', ms }),
};

export function describeAction(a: FaultAction): string {
  switch (a.type) {
    case 'status':
      return `status ${a.status}${a.code ? ` ${a.code}` : ''}${a.body && a.body !== 'xml' ? ` ${a.body}` : ''}`;
    case 'strip-header':
      return `strip ${a.header}`;
    case 'reset':
      return `reset ${a.at}`;
    case 'stall':
      return `stall ${a.at}`;
    case 'truncate':
      return 'truncate';
    case 'flip':
      return a.target === 'request' ? 'flip request' : 'flip';
    case 'delay':
      return `delay ${a.ms}ms`;
  }
}

/** mulberry32: tiny, seedable, good enough to pick faults reproducibly. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * walvault settings that make "forever" faults end in seconds: a 5 s deadline, 1 s of silence on a
 * socket, 2 s per attempt (1 s was seen to expire on a healthy 1 MiB GET while a PostgreSQL soak ran
 * beside the test on 2 cores), short backoff (README: Configuration).
 */
export const FAST_TIMEOUTS = {
  WALVAULT_DEADLINE: '5',
  WALVAULT_ATTEMPT_TIMEOUT: '2',
  WALVAULT_IDLE_TIMEOUT: '1',
  WALVAULT_RETRY_MIN_DELAY: '0.05',
  WALVAULT_RETRY_MAX_DELAY: '0.3',
  WALVAULT_CONNECT_TIMEOUT: '1',
} as const;

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection']);
const MAX_LOG = 20_000;

function rawPairs(raw: string[], drop: Set<string>): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (drop.has(raw[i]!.toLowerCase())) continue;
    out.push(raw[i]!, raw[i + 1]!);
  }
  return out;
}

function headerValue(raw: string[], name: string): string | undefined {
  for (let i = 0; i + 1 < raw.length; i += 2) if (raw[i]!.toLowerCase() === name) return raw[i + 1];
  return undefined;
}

function xmlEscape(s: string): string {
  return s.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** A writable that XORs bytes [from, from+count) of the stream with 0xff and hands chunks on. */
function flipper(from: number, count: number, write: (c: Buffer) => void, end: () => void): Writable {
  const to = from + count;
  let pos = 0;
  return new Writable({
    write(chunk: Buffer, _enc, cb) {
      const start = pos;
      pos += chunk.length;
      if (to > start && from < pos) {
        const copy = Buffer.from(chunk);
        for (let i = Math.max(from, start); i < Math.min(to, pos); i++) copy[i - start]! ^= 0xff;
        chunk = copy;
      }
      write(chunk);
      cb();
    },
    final(cb) {
      end();
      cb();
    },
  });
}

interface LiveRule extends RuleHandle {
  rule: FaultRule;
}

export interface FaultProxyOptions {
  /** The real store, e.g. http://127.0.0.1:7480. */
  upstream: string;
  /** Seed of the RNG behind `probability`; default 1. */
  seed?: number;
  /** The store's secret key: lets strip-header rules sign the changed request again. */
  secretAccessKey?: string;
}

export class FaultProxy {
  /** http://127.0.0.1:<port>: give this to walvault as its S3 endpoint. */
  readonly url: string;
  readonly port: number;
  /** Every request seen, oldest first (bounded). */
  readonly log: RequestRecord[] = [];
  requests = 0;
  faults = 0;

  private rules: LiveRule[] = [];
  private random: () => number;
  private readonly sockets = new Set<Socket>();
  private readonly upstreamRequests = new Set<http.ClientRequest>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  private closed = false;

  private readonly server: http.Server;
  private readonly upstream: URL;
  private readonly secretAccessKey: string | undefined;

  private constructor(server: http.Server, upstream: URL, seed: number, secretAccessKey?: string) {
    this.server = server;
    this.upstream = upstream;
    this.secretAccessKey = secretAccessKey;
    const { port } = server.address() as AddressInfo;
    this.port = port;
    this.url = `http://127.0.0.1:${port}`;
    this.random = seededRandom(seed);
  }

  static async start(opts: FaultProxyOptions): Promise<FaultProxy> {
    const upstream = new URL(opts.upstream);
    if (upstream.protocol !== 'http:') throw new Error(`fault proxy: only http upstreams are supported, got ${opts.upstream}`);
    const server = http.createServer({ keepAliveTimeout: 30_000, requestTimeout: 0, headersTimeout: 0 });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const proxy = new FaultProxy(server, upstream, opts.seed ?? 1, opts.secretAccessKey);
    server.on('connection', (s: Socket) => {
      proxy.sockets.add(s);
      s.on('close', () => proxy.sockets.delete(s));
      s.on('error', () => {});
    });
    server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => proxy.handle(req, res));
    server.on('clientError', (_e, s: Socket) => s.destroy());
    return proxy;
  }

  /** Adds a rule (evaluated after the existing ones); the handle's counters are live. */
  addRule(rule: FaultRule): RuleHandle {
    if (rule.action.type === 'strip-header' && !this.secretAccessKey) {
      throw new Error('fault proxy: a strip-header rule needs the secretAccessKey option (the request must be signed again)');
    }
    const live: LiveRule = { rule, name: rule.name ?? describeAction(rule.action), matched: 0, injected: 0 };
    this.rules.push(live);
    return live;
  }

  /** Removes one rule (its handle keeps its final counters). */
  removeRule(handle: RuleHandle): void {
    this.rules = this.rules.filter((r) => r !== handle);
  }

  clearRules(): void {
    this.rules = [];
  }

  /** Reseeds the RNG (for probability rules). */
  reseed(seed: number): void {
    this.random = seededRandom(seed);
  }

  stats(): { requests: number; faults: number; rules: RuleStats[]; byAction: Record<string, number> } {
    const byAction: Record<string, number> = {};
    for (const r of this.log) if (r.fault) byAction[r.fault] = (byAction[r.fault] ?? 0) + 1;
    return {
      requests: this.requests,
      faults: this.faults,
      rules: this.rules.map(({ name, matched, injected }) => ({ name, matched, injected })),
      byAction,
    };
  }

  /** Requests whose method and target match, e.g. all PUTs of one key. */
  seen(method: string, path: RegExp): RequestRecord[] {
    return this.log.filter((r) => r.method === method.toUpperCase() && path.test(r.url));
  }

  /** Resolves once a request matching `pred` has been seen (polling every 20 ms). */
  async waitForRequest(pred: (r: RequestRecord) => boolean, timeoutMs = 10_000): Promise<RequestRecord> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.log.find(pred);
      if (hit) return hit;
      if (Date.now() > until) throw new Error(`fault proxy: no matching request within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Stops listening and destroys every connection, stalled ones included. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const r of this.upstreamRequests) r.destroy();
    for (const s of this.sockets) s.destroy();
    this.agent.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private pick(method: string, url: string): LiveRule | undefined {
    for (const r of this.rules) {
      const { rule } = r;
      if (rule.method !== undefined) {
        const methods = (Array.isArray(rule.method) ? rule.method : [rule.method]).map((m) => m.toUpperCase());
        if (!methods.includes(method)) continue;
      }
      if (rule.path && !rule.path.test(url)) continue;
      const n = ++r.matched;
      if (rule.first !== undefined && n > rule.first) continue;
      if (rule.nth && !rule.nth.includes(n)) continue;
      if (rule.probability !== undefined && rule.probability < 1 && this.random() >= rule.probability) continue;
      r.injected++;
      return r;
    }
    return undefined;
  }

  private later(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const method = (req.method ?? 'GET').toUpperCase();
    const url = req.url ?? '/';
    const record: RequestRecord = { id: ++this.requests, method, url };
    const hit = this.pick(method, url);
    if (hit) {
      record.fault = hit.name;
      this.faults++;
    }
    this.log.push(record);
    if (this.log.length > MAX_LOG) this.log.splice(0, this.log.length - MAX_LOG);
    res.on('error', () => {});
    req.on('error', () => {});
    const action = hit?.rule.action;
    const socket = req.socket;

    if (!action) return this.forward(req, res, record);
    switch (action.type) {
      case 'status': {
        record.status = action.status;
        // Read the whole request first, as a store would before answering an upload.
        req.resume();
        req.once('end', () => this.sendError(req, res, action));
        return;
      }
      case 'strip-header':
        return this.forward(req, res, record, action);
      case 'delay':
        this.later(action.ms, () => this.forward(req, res, record));
        return;
      case 'reset':
        if (action.at === 'before') {
          socket.resetAndDestroy();
          return;
        }
        return this.forward(req, res, record, action);
      case 'stall':
        if (action.at === 'before') {
          req.resume(); // take the body, answer nothing, ever
          return;
        }
        return this.forward(req, res, record, action);
      case 'truncate':
      case 'flip':
        return this.forward(req, res, record, action);
    }
  }

  private sendError(req: http.IncomingMessage, res: http.ServerResponse, a: Extract<FaultAction, { type: 'status' }>): void {
    const { status } = a;
    const requestId = `fault-proxy-${this.requests}`;
    let body: string;
    let type: string | undefined;
    if (a.body === 'html') {
      const title = `${status} ${http.STATUS_CODES[status] ?? 'Error'}`;
      body = `<!DOCTYPE html>\n<html><head><title>${title}</title></head>\n<body><h1>${title}</h1><p>The requested URL was not found on this server.</p></body></html>\n`;
      type = 'text/html';
    } else if (a.body === 'text') {
      body = `${status} page not found\n`;
      type = 'text/plain; charset=utf-8';
    } else if (a.body === 'empty') {
      body = '';
    } else {
      const canned = S3_ERRORS[status] ?? { code: 'InternalError', message: 'error' };
      const c = a.code ?? canned.code;
      const m = a.message ?? canned.message;
      body =
        `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${xmlEscape(c)}</Code><Message>${xmlEscape(m)}</Message>` +
        `<Resource>${xmlEscape(req.url ?? '/')}</Resource><RequestId>${requestId}</RequestId></Error>`;
      type = 'application/xml';
    }
    if (req.method === 'HEAD') body = '';
    res.writeHead(status, {
      ...(type ? { 'Content-Type': type } : {}),
      'Content-Length': Buffer.byteLength(body),
      ...(a.body === 'xml' || a.body === undefined ? { 'x-amz-request-id': requestId } : {}),
      ...(status === 503 || status === 429 ? { 'Retry-After': '1' } : {}),
    });
    res.end(body);
  }

  private forward(req: http.IncomingMessage, res: http.ServerResponse, record: RequestRecord, action?: FaultAction): void {
    const clientSocket = req.socket;
    let headers = rawPairs(req.rawHeaders, HOP_BY_HOP);
    if (action?.type === 'strip-header') {
      headers = dropHeaderAndResign(req.method ?? 'GET', req.url ?? '/', headers, action.header.toLowerCase(), this.secretAccessKey!);
    }
    const up = http.request({
      host: this.upstream.hostname,
      port: Number(this.upstream.port || 80),
      method: req.method,
      path: req.url,
      headers: headers as unknown as http.OutgoingHttpHeaders,
      setHost: false,
      // radosgw answers a HEAD of the service root (`HEAD /`, what check's endpoint probe sends) with
      // a chunked body, which Node's parser reports as an error after the headers; on a kept-alive
      // socket the bytes would also break the next answer. A HEAD gets a connection of its own.
      agent: req.method === 'HEAD' ? false : this.agent,
    });
    this.upstreamRequests.add(up);
    const done = () => this.upstreamRequests.delete(up);
    up.on('close', done);
    // The client gave up (its timeout, or walvault was killed): let the store see it too.
    req.on('close', () => {
      if (!req.complete) up.destroy();
    });
    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
    });
    up.on('error', () => {
      // radosgw's stray body after a HEAD answer (see above): the answer itself was whole.
      if (!action && req.method === 'HEAD' && res.headersSent) return void res.end();
      // The store went away (or we cut it): the client sees a reset, like it would from the store.
      if (!res.headersSent) clientSocket.destroy();
      else res.destroy();
    });

    // Request body: forwarded as it comes, or cut after `afterBytes` for reset at 'request-body'.
    if (action?.type === 'reset' && action.at === 'request-body') {
      const declared = Number(headerValue(req.rawHeaders, 'content-length') ?? '0');
      const limit = action.afterBytes ?? Math.max(1, Math.floor(declared / 2));
      let sent = 0;
      let cut = false;
      const cutNow = () => {
        if (cut) return;
        cut = true;
        req.pause();
        up.destroy();
        clientSocket.resetAndDestroy();
      };
      req.on('data', (chunk: Buffer) => {
        if (cut) return;
        const room = limit - sent;
        if (chunk.length >= room) {
          if (room > 0) up.write(chunk.subarray(0, room));
          sent = limit;
          // Let the partial body reach the store before both connections die.
          this.later(50, cutNow);
          req.pause();
          return;
        }
        sent += chunk.length;
        up.write(chunk);
      });
      // A body shorter than the limit (or none): cut once it has all arrived, before any answer.
      req.on('end', () => this.later(50, cutNow));
      return;
    }
    if (action?.type === 'flip' && action.target === 'request') {
      const declared = Number(headerValue(req.rawHeaders, 'content-length') ?? '0');
      req.pipe(flipper(action.offset ?? Math.floor(declared / 2), action.count ?? 1, (c) => up.write(c), () => up.end()));
    } else {
      req.pipe(up);
    }

    up.on('response', (upRes) => {
      record.status = upRes.statusCode;
      const headers = rawPairs(upRes.rawHeaders, new Set([...HOP_BY_HOP, 'transfer-encoding']));
      const length = Number(headerValue(upRes.rawHeaders, 'content-length') ?? NaN);
      const half = Number.isFinite(length) ? Math.floor(length / 2) : 1024;

      if (action?.type === 'reset' && action.at === 'after') {
        upRes.resume();
        upRes.once('end', () => clientSocket.resetAndDestroy());
        return;
      }
      if (action?.type === 'stall' && action.at === 'after') {
        upRes.resume(); // the store did its work; the client never hears about it
        return;
      }
      res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, headers as unknown as http.OutgoingHttpHeaders);

      if (action?.type === 'reset' || action?.type === 'stall' || action?.type === 'truncate') {
        // Send the first `limit` body bytes, then reset / go silent / close.
        const limit =
          action.type === 'truncate' ? (action.keepBytes ?? half) : (action.afterBytes ?? half);
        let sent = 0;
        let stopped = false;
        const stop = () => {
          if (stopped) return;
          stopped = true;
          upRes.unpipe();
          upRes.pause();
          up.destroy();
          if (action.type === 'reset') {
            // Let the bytes already written leave before the RST.
            this.later(20, () => clientSocket.resetAndDestroy());
          } else if (action.type === 'truncate') {
            this.later(20, () => clientSocket.destroySoon());
          }
          // stall: keep the socket open and silent until the client gives up or close().
        };
        if (limit <= 0) {
          res.flushHeaders();
          stop();
          return;
        }
        upRes.on('data', (chunk: Buffer) => {
          if (stopped) return;
          const room = limit - sent;
          if (chunk.length >= room) {
            res.write(chunk.subarray(0, room));
            sent = limit;
            stop();
            return;
          }
          sent += chunk.length;
          res.write(chunk);
        });
        upRes.on('end', () => {
          // The body was shorter than the limit: still never finish the response properly.
          if (!stopped) {
            res.flushHeaders();
            stop();
          }
        });
        return;
      }

      if (action?.type === 'flip' && action.target !== 'request') {
        upRes.pipe(flipper(action.offset ?? half, action.count ?? 1, (c) => res.write(c), () => res.end()));
        return;
      }

      upRes.pipe(res);
    });
  }
}
