// Node only: the RedisLike of RedisStore over ioredis. Fails fast while Redis is unreachable
// (no offline queue, short command timeout) so a dead Redis never stalls requests; ioredis keeps
// reconnecting in the background and the store is usable again as soon as it answers.
import { Redis, type RedisOptions } from 'ioredis';
import { RedisReplyError, type RedisLike } from './redis-store.ts';

export interface IoRedisClientOptions {
  /** Milliseconds a command may take before it counts as "Redis unavailable". */
  commandTimeoutMs?: number;
  log?: (msg: string) => void;
  redisOptions?: RedisOptions;
}

export class IoRedisClient implements RedisLike {
  readonly redis: Redis;
  private lastErrorLog = 0;

  constructor(url: string, opts: IoRedisClientOptions = {}) {
    const log = opts.log ?? (() => {});
    this.redis = new Redis(url, {
      lazyConnect: true,
      enableOfflineQueue: false,
      enableAutoPipelining: true,
      maxRetriesPerRequest: 1,
      connectTimeout: 1000,
      commandTimeout: opts.commandTimeoutMs ?? 1000,
      retryStrategy: (times) => Math.min(100 * times, 1000),
      ...opts.redisOptions,
    });
    this.redis.on('error', (err: Error) => {
      const now = Date.now();
      if (now - this.lastErrorLog > 5000) {
        this.lastErrorLog = now;
        log(`redis: ${err.message}`);
      }
    });
  }

  /** Connects (resolves even when Redis is down: the gateway starts degraded and recovers). */
  async connect(): Promise<boolean> {
    try {
      await this.redis.connect();
      return true;
    } catch {
      return false;
    }
  }

  async command(args: Array<string | number>): Promise<unknown> {
    const [name, ...rest] = args;
    try {
      return await this.redis.call(String(name), ...rest.map((a) => (typeof a === 'number' ? String(a) : a)));
    } catch (err) {
      if ((err as Error)?.name === 'ReplyError') throw new RedisReplyError((err as Error).message);
      throw err;
    }
  }

  async close(): Promise<void> {
    try {
      await this.redis.quit();
    } catch {
      this.redis.disconnect();
    }
  }
}
