// A local HTTP front for a real redis-server in the Upstash REST dialect (POST a JSON array of
// words, get {result} or {error}): what the Worker build uses to reach a shared Redis.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Redis } from 'ioredis';

export interface RedisRest {
  url: string;
  token: string;
  commands: number;
  close(): Promise<void>;
}

export async function startRedisRest(redisUrl: string, token = 'rest-token'): Promise<RedisRest> {
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1, enableOfflineQueue: false, lazyConnect: true });
  redis.on('error', () => {});
  await redis.connect();
  const state = { commands: 0 };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      const send = (status: number, body: unknown) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      if (req.headers.authorization !== `Bearer ${token}`) return send(401, { error: 'Unauthorized' });
      let args: string[];
      try {
        args = JSON.parse(Buffer.concat(chunks).toString('utf-8')) as string[];
      } catch {
        return send(400, { error: 'ERR body must be a JSON array' });
      }
      state.commands++;
      try {
        const result = await redis.call(args[0]!, ...args.slice(1));
        send(200, { result });
      } catch (err) {
        if ((err as Error).name === 'ReplyError') send(400, { error: (err as Error).message });
        else send(503, { error: (err as Error).message });
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    token,
    get commands() {
      return state.commands;
    },
    async close() {
      await new Promise<void>((r) => server.close(() => r()));
      redis.disconnect();
    },
  };
}
