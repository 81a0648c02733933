// Node only: the RedisLike of RedisStore over ioredis. Fails fast while Redis is unreachable
// (no offline queue, short command timeout) so a dead Redis never stalls requests; ioredis keeps
// reconnecting in the background and the store is usable again as soon as it answers.
//
// Commands are pipelined per turn of the event loop: every command issued while the loop handles
// one batch of I/O (many requests' key lookups, reservations and settlements) goes out in one
// write (the socket corked while they are queued) and comes back in one read, instead of a write
// and a read each (ioredis' own auto-pipelining batches within one tick only, and each request
// runs in a tick of its own). Deferrable commands (settlements, which nobody waits for) wait up to
// DEFER_MS for the next batch rather than take a write (and a Redis wake-up) of their own. One timer bounds the whole batch rather than one per command, and no
// Pipeline object is built per batch: both showed in the gateway's profile.
import { Redis, type RedisOptions } from 'ioredis';
import { RedisReplyError, type RedisLike } from './redis-store.ts';

export interface IoRedisClientOptions {
  /** Milliseconds a command may take before it counts as "Redis unavailable". */
  commandTimeoutMs?: number;
  log?: (msg: string) => void;
  redisOptions?: RedisOptions;
}

/** How long a deferrable command may wait for other commands to share its write. */
const DEFER_MS = 2;

interface Queued {
  name: string;
  args: string[];
  resolve: (v: unknown) => void;
  reject: (err: unknown) => void;
}

export class IoRedisClient implements RedisLike {
  readonly redis: Redis;
  private lastErrorLog = 0;
  private queue: Queued[] = [];
  private immediate = false;
  private deferTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly timeoutMs: number;

  constructor(url: string, opts: IoRedisClientOptions = {}) {
    const log = opts.log ?? (() => {});
    this.timeoutMs = opts.commandTimeoutMs ?? 1000;
    this.redis = new Redis(url, {
      lazyConnect: true,
      enableOfflineQueue: false,
      enableAutoPipelining: false,
      maxRetriesPerRequest: 1,
      connectTimeout: 1000,
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

  async command(args: Array<string | number>, opts?: { deferrable?: boolean }): Promise<unknown> {
    const name = String(args[0]);
    const rest: string[] = new Array(args.length - 1);
    for (let i = 1; i < args.length; i++) rest[i - 1] = String(args[i]);
    try {
      return await new Promise((resolve, reject) => {
        this.queue.push({ name, args: rest, resolve, reject });
        if (opts?.deferrable) {
          if (!this.immediate && !this.deferTimer) this.deferTimer = setTimeout(() => this.flush(), DEFER_MS);
        } else if (!this.immediate) {
          this.immediate = true;
          setImmediate(() => this.flush());
        }
      });
    } catch (err) {
      if ((err as Error)?.name === 'ReplyError') throw new RedisReplyError((err as Error).message);
      throw err;
    }
  }

  private flush(): void {
    this.immediate = false;
    if (this.deferTimer) {
      clearTimeout(this.deferTimer);
      this.deferTimer = null;
    }
    const batch = this.queue;
    this.queue = [];
    if (batch.length === 0) return;
    // A Redis that stops answering fails the batch after timeoutMs ("unavailable": 503), as
    // ioredis' commandTimeout would; a late reply then settles nothing.
    let left = batch.length;
    const timer = setTimeout(() => {
      for (const c of batch) c.reject(new Error('Command timed out'));
    }, this.timeoutMs);
    const settled = () => {
      if (--left === 0) clearTimeout(timer);
    };
    const stream = this.redis.status === 'ready' ? (this.redis.stream as { cork?: () => void; uncork?: () => void; writable?: boolean } | undefined) : undefined;
    const cork = stream?.writable === true && typeof stream.cork === 'function' && typeof stream.uncork === 'function';
    if (cork) stream!.cork!();
    try {
      for (const c of batch) {
        this.redis.call(c.name, ...c.args).then(
          (v) => {
            settled();
            c.resolve(v);
          },
          (err) => {
            settled();
            c.reject(err);
          },
        );
      }
    } finally {
      if (cork) stream!.uncork!();
    }
  }

  async close(): Promise<void> {
    this.flush(); // deferred settlements go out before QUIT
    try {
      await this.redis.quit();
    } catch {
      this.redis.disconnect();
    }
  }
}
