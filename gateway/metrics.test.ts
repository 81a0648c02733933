// The Node gateway's Prometheus metrics: every answer counted by route pattern, method and status
// (quota 429s and auth 401s included, unknown paths as "unmatched"), served on the metrics port
// only. The upstream is the stand-in: what is measured here is the gateway's own bookkeeping.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startStandIn, type StandIn } from '../test/gateway/helpers/standin.ts';
import { startGateway, type RunningGateway } from './node.ts';

const KEY = 'metrics-test-service-key-0123456789abcdef';

/** The value of one sample line of a Prometheus text exposition (0 when absent). */
function sample(text: string, name: string, labels: Record<string, string>): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const body = line.slice(name.length + 1, line.indexOf('}'));
    const got = Object.fromEntries([...body.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v) && Object.keys(got).length === Object.keys(labels).length) {
      return Number(line.slice(line.indexOf('}') + 1));
    }
  }
  return 0;
}

describe('gateway metrics (Node)', () => {
  let up: StandIn;
  let gw: RunningGateway;
  before(async () => {
    up = await startStandIn();
    gw = await startGateway({ backends: [up.url], serviceKey: KEY, adminToken: 'adm', port: 0, metricsPort: 0, log: () => {} });
  });
  after(async () => {
    await gw?.close();
    await up?.close();
  });

  it('counts answers by route, method and status, and times them', async () => {
    const k = await fetch(`${gw.url}/admin/keys`, { method: 'POST', headers: { authorization: 'Bearer adm' }, body: JSON.stringify({ tenant: 'acme', limits: { rpm: 2 } }) });
    const key = ((await k.json()) as { key: string }).key;
    const gen = () => fetch(`${gw.url}/generate`, { method: 'POST', headers: { authorization: `Bearer ${key}` }, body: JSON.stringify({ inputs: 'hi' }) });
    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push((await gen()).status);
    assert.deepEqual(statuses, [200, 200, 429]);
    assert.equal((await fetch(`${gw.url}/generate`, { method: 'POST', body: '{}' })).status, 401);
    assert.equal((await fetch(`${gw.url}/no/such/path/${Math.random()}`)).status, 404);
    assert.equal((await fetch(`${gw.url}/v1/adapters/x/adapter_config.json`, { method: 'PUT', body: '{}' })).status, 401);

    const text = await (await fetch(gw.metricsUrl!)).text();
    const req = (route: string, method: string, status: string) => sample(text, 'switchboard_gateway_requests_total', { route, method, status });
    assert.equal(req('/generate', 'POST', '200'), 2);
    assert.equal(req('/generate', 'POST', '429'), 1);
    assert.equal(req('/generate', 'POST', '401'), 1);
    assert.equal(req('/admin/keys', 'POST', '200') + req('/admin/keys', 'POST', '201'), 1);
    assert.equal(req('unmatched', 'GET', '404'), 1, 'unknown paths share one label');
    assert.ok(!text.includes('/no/such/path'), 'raw paths never become labels');
    assert.equal(req('/v1/adapters/:name/:file', 'PUT', '401'), 1, 'sub-app routes are labelled by their full pattern');
    assert.equal(sample(text, 'switchboard_gateway_request_duration_seconds_count', { route: '/generate' }), 4);
    assert.match(text, /^process_cpu_seconds_total /m);
  });

  it('serves metrics on their own port only', async () => {
    assert.equal((await fetch(`${gw.url}/metrics`)).status, 404);
    assert.equal((await fetch(gw.metricsUrl!.replace('/metrics', '/other'))).status, 404);
  });
});
