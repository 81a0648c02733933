// The RedisLike of RedisStore over HTTP, in the Upstash REST dialect (POST a JSON array of the
// command's words, get `{result}` or `{error}` back): the way a Worker reaches a shared Redis
// without TCP sockets. Same Lua scripts, same atomicity as ioredis on Node.
import { RedisReplyError, type RedisLike } from './redis-store.ts';

export interface RestRedisOptions {
  url: string;
  token?: string;
  timeoutMs?: number;
  fetch?: typeof fetch;
}

export class RestRedisClient implements RedisLike {
  private readonly f: typeof fetch;
  constructor(private readonly opts: RestRedisOptions) {
    this.f = opts.fetch ?? ((...a) => fetch(...a));
  }

  async command(args: Array<string | number>): Promise<unknown> {
    const res = await this.f(this.opts.url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        ...(this.opts.token ? { authorization: `Bearer ${this.opts.token}` } : {}),
      },
      body: JSON.stringify(args.map(String)),
      signal: AbortSignal.timeout(this.opts.timeoutMs ?? 2000),
    });
    if (res.status >= 500) throw new Error(`redis REST endpoint answered ${res.status}`);
    const body = (await res.json().catch(() => null)) as { result?: unknown; error?: string } | null;
    if (!body) throw new Error(`redis REST endpoint answered ${res.status} without JSON`);
    if (typeof body.error === 'string') {
      if (res.status === 401 || res.status === 403) throw new Error(`redis REST endpoint refused the token: ${body.error}`);
      throw new RedisReplyError(body.error);
    }
    return body.result ?? null;
  }

  async close(): Promise<void> {}
}
