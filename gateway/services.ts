// What every middleware and route of the gateway shares: its options, its dependencies (store,
// router, signer...), the per-instance caches (quota scopes, backend info) and the few helpers
// that read a request the runtime's way (body, client disconnect, background work). Built once by
// createGateway (app.ts) and handed to each middleware and route factory; per-request results
// travel on the Hono context as the typed Variables of GatewayEnv.
import type { Context } from 'hono';
import type { Context as OtelContext } from '@opentelemetry/api';
import { AdapterResolver } from './adapters.ts';
import type { JwtVerifier } from './auth/jwt.ts';
import { BackendInfoCache } from './backend-info.ts';
import { declaredTooLarge, parseJsonObject, readBytes, type CheckedBody, type JsonCodec, type NativeBody } from './body.ts';
import type { RequestSchemaName } from '../protocol/request-schemas.ts';
import { DEFAULT_SCHEMA_LIMITS, type SchemaLimits } from './json-schema.ts';
import type { SecretBox } from './lib/crypto.ts';
import { QuotaScopes } from './quota.ts';
import { INVALID_KEY, verifyKeyHash } from './auth/api-keys.ts';
import { TtlCache } from './lib/ttl-cache.ts';
import { GatewayError } from './errors.ts';
import type { Router } from './routing.ts';
import type { ServiceTokenSigner } from './service-token.ts';
import type { ApiKeyRecord, GatewayStore, Limits } from './store/types.ts';
import { injectContext, type HeaderSource } from './telemetry.ts';
import { AdapterManager } from './tenant-adapters.ts';

export interface GatewayOptions {
  /** JSON request bodies (inference, admin). */
  maxBodyBytes: number;
  /** One adapter file upload. */
  maxAdapterBytes: number;
  /** Adapter uploads one tenant may have in flight through this instance (429 past it). */
  maxUploadsPerTenant: number;
  schemaLimits: SchemaLimits;
  /** Prompt bytes per token for the reservation bound (1: never underestimates). */
  promptBytesPerToken: number;
  /** Limits of tenants without their own (null: unlimited). */
  defaultTenantLimits: Limits | null;
  /** Limits of each API key / JWT subject on top of its tenant's (a key's own limits override). */
  defaultKeyLimits: Limits | null;
  /** Stream slot lease; renewed every third of it while the stream runs. */
  leaseTtlMs: number;
  /** How long tenant records (limits) are cached per instance. */
  tenantCacheTtlMs: number;
  /** Replicas tried per request (before the first byte). */
  maxAttempts: number;
  /** Adds x-switchboard-backend (the replica's index) to answers: for tests and debugging. */
  exposeBackend: boolean;
}

export const DEFAULT_OPTIONS: GatewayOptions = {
  maxBodyBytes: 1024 * 1024,
  maxAdapterBytes: 512 * 1024 * 1024,
  maxUploadsPerTenant: 2,
  schemaLimits: DEFAULT_SCHEMA_LIMITS,
  promptBytesPerToken: 1,
  defaultTenantLimits: null,
  defaultKeyLimits: null,
  leaseTtlMs: 60_000,
  tenantCacheTtlMs: 2000,
  maxAttempts: 3,
  exposeBackend: false,
};

export interface GatewayDeps {
  store: GatewayStore;
  router: Router;
  signer: ServiceTokenSigner;
  secretBox: SecretBox;
  adminToken?: string | null;
  jwt?: JwtVerifier | null;
  options?: Partial<GatewayOptions>;
  fetch?: typeof fetch;
  log?: (msg: string) => void;
  /** Workers: background work (settlements, health checks) is handed to waitUntil. */
  runtime?: 'node' | 'workers';
  /** Told about every answer (the Node gateway's Prometheus metrics, gateway/metrics.ts). */
  metrics?: RequestObserver | null;
  /** Large JSON bodies parsed and serialised off the event loop (Node: gateway/json-offload.ts); absent: inline. */
  json?: JsonCodec | null;
  /** Told what each generation used, once, when it is settled (the Node gateway's access log). */
  onUsage?: ((req: Request, usage: RequestUsage) => void) | null;
}

export interface RequestUsage {
  tenant: string;
  /** The adapter name as the tenant wrote it (merges: names joined by "+"), null for the base model. */
  adapter: string | null;
  promptTokens: number;
  completionTokens: number;
}

export interface RequestObserver {
  /** route: the matched route pattern, or "unmatched"; seconds: to the response head. */
  observe(route: string, method: string, status: number, seconds: number): void;
}

/** Who is calling, as the auth middleware found it (c.get('principal')). */
export interface Principal {
  tenant: string;
  /** API key id, or null for a JWT. */
  keyId: string | null;
  /** The API key's hash (null for a JWT). */
  keyHash?: string | null;
  /** The key's record came from this instance's cache: confirm it before any answer but a reservation's (Services.confirmKey). */
  keyCached?: boolean;
  /** Who to count per-key limits against: the key id, or jwt:<sub>. */
  subject: string;
  via: 'api_key' | 'jwt';
  /** null: every scope. */
  scopes: Set<string> | null;
  keyLimits: Limits | null;
}

export type GatewayEnv = {
  Variables: {
    /** The request's server span context (middleware/observe.ts): parent of every child span. */
    otel: OtelContext;
    /** Set by the auth middleware (middleware/auth.ts) on routes that require a credential. */
    principal: Principal;
    /** Memoised by Services.clientSignal. */
    clientSignal: AbortSignal;
    /** Size of the JSON body Services.readBody read. */
    bodyBytes: number;
  };
};

export type GatewayContext = Context<GatewayEnv>;

// On Node, @hono/node-server hands over the raw IncomingMessage / ServerResponse as env. Reading
// the body and watching the connection there avoids materialising a full web Request (and its
// body stream) per request; duck-typed so this module stays free of node: imports.
interface NodeEnv {
  incoming?: NativeBody & { rawHeaders?: string[] };
  outgoing?: { once(ev: 'close', fn: () => void): void; writableFinished: boolean };
}

/**
 * A request's headers read from Node's raw header list (name, value, name, value...), without the
 * undici Headers object @hono/node-server builds on first access (a per-request cost the profile
 * showed). Same answers as Headers: names case-insensitive, repeated headers joined by ", ".
 */
class RawHeaders implements HeaderSource {
  constructor(private readonly raw: string[]) {}

  get(name: string): string | null {
    const n = name.toLowerCase();
    let out: string | null = null;
    for (let i = 0; i + 1 < this.raw.length; i += 2) {
      const k = this.raw[i]!;
      if (k.length === n.length && k.toLowerCase() === n) out = out === null ? this.raw[i + 1]! : `${out}, ${this.raw[i + 1]!}`;
    }
    return out;
  }

  keys(): Iterable<string> {
    const seen = new Set<string>();
    for (let i = 0; i < this.raw.length; i += 2) seen.add(this.raw[i]!.toLowerCase());
    return [...seen].sort();
  }
}

export class Services {
  readonly opts: GatewayOptions;
  readonly log: (msg: string) => void;
  readonly fetch: typeof fetch;
  readonly store: GatewayStore;
  readonly router: Router;
  readonly signer: ServiceTokenSigner;
  readonly box: SecretBox;
  readonly resolver: AdapterResolver;
  readonly adapters: AdapterManager;
  readonly quota: QuotaScopes;
  readonly backendInfo: BackendInfoCache;
  /** Known API keys' records by hash, for the routes that reserve (their reservation re-checks revocation). */
  readonly keyCache: TtlCache<ApiKeyRecord>;
  private readonly onNode: boolean;

  constructor(readonly deps: GatewayDeps) {
    this.opts = { ...DEFAULT_OPTIONS, ...deps.options };
    this.log = deps.log ?? (() => {});
    this.fetch = deps.fetch ?? ((...a: Parameters<typeof fetch>) => fetch(...a));
    this.store = deps.store;
    this.router = deps.router;
    this.signer = deps.signer;
    this.box = deps.secretBox;
    this.onNode = deps.runtime !== 'workers';
    this.resolver = new AdapterResolver(this.store, this.box);
    this.adapters = new AdapterManager({ store: this.store, router: this.router, signer: this.signer, box: this.box, fetch: this.fetch, maxUploadsPerTenant: this.opts.maxUploadsPerTenant });
    this.quota = new QuotaScopes(this.store, this.opts);
    this.backendInfo = new BackendInfoCache(this);
    this.keyCache = new TtlCache(this.opts.tenantCacheTtlMs);
  }

  /**
   * On a route that authenticated from the key cache, any answer other than a reservation's (a
   * validation error, an unknown adapter...) first confirms the key with the store, so a revoked
   * key gets its 401 there too, as it would without the cache.
   */
  async confirmKey(p: Principal): Promise<void> {
    if (!p.keyCached || !p.keyHash) return;
    if (await verifyKeyHash(this.store, p.keyHash)) return;
    this.keyCache.delete(p.keyHash);
    throw new GatewayError(401, INVALID_KEY, { code: 'invalid_api_key', loraxType: 'unauthorized', headers: { 'www-authenticate': 'Bearer' } });
  }

  /** Headers that authenticate the gateway to a backend for `tenant` and carry the trace context. */
  async serviceHeaders(tenant: string, ctx: OtelContext, extra: Record<string, string> = {}): Promise<Record<string, string>> {
    const h: Record<string, string> = { authorization: `Bearer ${await this.signer.token(tenant)}`, ...extra };
    injectContext(ctx, h);
    return h;
  }

  /** The request's headers (Node: a view over the raw list; elsewhere the Request's Headers). */
  headers(c: Context): HeaderSource {
    const raw = this.onNode ? (c.env as NodeEnv | undefined)?.incoming?.rawHeaders : undefined;
    return Array.isArray(raw) ? new RawHeaders(raw) : c.req.raw.headers;
  }

  /** One request header, as Headers.get answers it. */
  header(c: Context, name: string): string | undefined {
    return this.headers(c).get(name) ?? undefined;
  }

  /** The request's JSON object body, within maxBodyBytes (large ones parsed off the event loop). */
  async readBody(c: Context): Promise<Record<string, unknown>> {
    const bytes = await readBytes(c.req.raw, this.opts.maxBodyBytes, 'request body', this.nativeBody(c), this.header(c, 'content-length') ?? null);
    (c as GatewayContext).set('bodyBytes', bytes.byteLength);
    const codec = this.deps.json;
    if (codec && bytes.byteLength > codec.inlineMaxBytes) return codec.parse(bytes);
    return parseJsonObject(bytes);
  }

  /**
   * readBody for an inference route: a large body is validated with the named schema on the
   * codec's thread too (`valid`, JsonCodec.parseChecked); a small one (or without a codec) comes
   * with `valid` null and the route validates it inline, with the same schema and answers.
   */
  async readRequest(c: Context, name: RequestSchemaName): Promise<CheckedBody | { raw: Record<string, unknown>; valid: null }> {
    const bytes = await readBytes(c.req.raw, this.opts.maxBodyBytes, 'request body', this.nativeBody(c), this.header(c, 'content-length') ?? null);
    (c as GatewayContext).set('bodyBytes', bytes.byteLength);
    const codec = this.deps.json;
    if (codec?.parseChecked && bytes.byteLength > codec.inlineMaxBytes) return codec.parseChecked(bytes, name);
    return { raw: parseJsonObject(bytes), valid: null };
  }

  /**
   * A JSON body for a backend: serialised off the event loop when it came from a large request
   * body (the prompt dominates it), inline otherwise.
   */
  async encodeBody(c: GatewayContext, value: unknown): Promise<string | Uint8Array<ArrayBuffer>> {
    const codec = this.deps.json;
    if (codec && (c.get('bodyBytes') ?? 0) > codec.inlineMaxBytes) return codec.stringify(value);
    return JSON.stringify(value);
  }

  /** Middleware: 413 for a declared Content-Length past maxBodyBytes, before credentials are looked up or a byte is read. */
  readonly declaredSize = async (c: Context, next: () => Promise<void>): Promise<void> => {
    const tooLarge = declaredTooLarge(this.header(c, 'content-length') ?? null, this.opts.maxBodyBytes);
    if (tooLarge) throw tooLarge;
    await next();
  };

  private nativeBody(c: Context): NativeBody | null {
    const inc = this.onNode ? (c.env as NodeEnv | undefined)?.incoming : undefined;
    return inc && typeof (inc as AsyncIterable<Uint8Array>)[Symbol.asyncIterator] === 'function' ? inc : null;
  }

  /** Aborts when the client goes away before the answer is complete. */
  clientSignal(c: GatewayContext): AbortSignal {
    const known = c.get('clientSignal');
    if (known) return known;
    const out = this.onNode ? (c.env as NodeEnv | undefined)?.outgoing : undefined;
    let signal: AbortSignal;
    if (out && typeof out.once === 'function') {
      const ac = new AbortController();
      out.once('close', () => {
        if (!out.writableFinished) ac.abort(new Error('client closed the connection'));
      });
      signal = ac.signal;
    } else {
      signal = c.req.raw.signal;
    }
    c.set('clientSignal', signal);
    return signal;
  }

  /** Runs in the background after the answer (Workers: waitUntil keeps the isolate for it). */
  background(c: Context, p: Promise<unknown>): void {
    const guarded = p.catch((err) => this.log(`background task failed: ${(err as Error)?.message ?? err}`));
    if (this.onNode) return; // Node: the process outlives the request anyway
    try {
      c.executionCtx.waitUntil(guarded);
    } catch {
      // no execution context (e.g. app.request in a test)
    }
  }
}
