// API keys (hash-only storage, revoke, expiry), tenant JWT verification (secret, PEM, JWK, JWKS
// served over loopback HTTP; expired, wrong audience/issuer, bad signature, no tenant), and
// service tokens checked by the backend's own verifier (the two layers must agree).
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { exportJWK, exportPKCS8, exportSPKI, generateKeyPair, jwtVerify, SignJWT } from 'jose';
import { serviceKeyFrom } from '../../backend/auth.ts';
import { SERVICE_AUDIENCE, SERVICE_ISSUER } from '../../protocol/index.ts';
import { ServiceTokenSigner } from '../service-token.ts';
import { MemoryStore } from '../store/memory-store.ts';
import { hashKey, issueKey, KEY_PREFIX, verifyKey } from './api-keys.ts';
import { JwtError, JwtVerifier } from './jwt.ts';

describe('API keys', () => {
  it('are shown once and stored only as a SHA-256 hash', async () => {
    const store = new MemoryStore();
    const { key, record } = await issueKey(store, { tenant: 'acme', scopes: ['inference'] });
    assert.ok(key.startsWith(KEY_PREFIX) && key.length > 40);
    assert.equal(JSON.stringify(record).includes(key), false);
    assert.equal(JSON.stringify(await store.listKeys()).includes(key.slice(KEY_PREFIX.length + 6)), false);
    assert.equal((await store.findKeyByHash(await hashKey(key)))?.id, record.id);
    assert.equal((await verifyKey(store, key))?.tenant, 'acme');
  });

  it('unknown, tampered, revoked and expired keys do not verify', async () => {
    const store = new MemoryStore();
    const { key, record } = await issueKey(store, { tenant: 'acme' });
    assert.equal(await verifyKey(store, `${key}x`), null);
    assert.equal(await verifyKey(store, 'sk-sb-nope'), null);
    assert.equal(await verifyKey(store, 'not-a-key'), null);
    await store.revokeKey(record.id, new Date().toISOString());
    assert.equal(await verifyKey(store, key), null);
    const soon = await issueKey(store, { tenant: 'acme', expiresAt: new Date(Date.now() + 60_000).toISOString() });
    assert.ok(await verifyKey(store, soon.key));
    assert.equal(await verifyKey(store, soon.key, Date.now() + 120_000), null);
  });
});

const ISS = 'https://idp.example.test';
const AUD = 'switchboard';
const SECRET = 'tenant-jwt-secret-0123456789abcdef0123';
const hs = (claims: Record<string, unknown>, opts: { exp?: string | number; aud?: string; iss?: string; secret?: string } = {}) =>
  new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuer(opts.iss ?? ISS)
    .setAudience(opts.aud ?? AUD)
    .setIssuedAt()
    .setExpirationTime(opts.exp ?? '5m')
    .sign(new TextEncoder().encode(opts.secret ?? SECRET));

describe('tenant JWTs', () => {
  it('HS256: accepts a valid token, with tenant and scopes', async () => {
    const v = await JwtVerifier.create({ issuer: ISS, audience: AUD, secret: SECRET });
    const r = await v.verify(await hs({ tenant: 'acme', sub: 'u1', scope: 'inference adapters:read' }));
    assert.equal(r.tenant, 'acme');
    assert.equal(r.subject, 'u1');
    assert.deepEqual(r.scopes, ['inference', 'adapters:read']);
  });

  it('a token verified once is still refused once it expires (the verified-token cache checks exp on every use)', async () => {
    const v = await JwtVerifier.create({ issuer: ISS, audience: AUD, secret: SECRET, clockToleranceSec: 0 });
    const tok = await hs({ tenant: 'acme' }, { exp: Math.floor(Date.now() / 1000) + 1 });
    assert.equal((await v.verify(tok)).tenant, 'acme');
    assert.equal((await v.verify(tok)).tenant, 'acme', 'again, from the cache');
    await new Promise((r) => setTimeout(r, 2100));
    await assert.rejects(v.verify(tok), (e: Error) => e instanceof JwtError && /expired/.test(e.message));
    await assert.rejects(v.verify(tok), (e: Error) => e instanceof JwtError && /expired/.test(e.message), 'and stays refused');
    // A forged token with the same claims never rides on the cached one.
    const forged = `${tok.slice(0, tok.lastIndexOf('.'))}.${'A'.repeat(43)}`;
    await assert.rejects(v.verify(forged), (e: Error) => e instanceof JwtError);
  });

  it('rejects expired, wrong audience, wrong issuer, bad signature, no tenant, no exp', async () => {
    const v = await JwtVerifier.create({ issuer: ISS, audience: AUD, secret: SECRET });
    const cases: Array<[string, Promise<string>, RegExp]> = [
      ['expired', hs({ tenant: 'acme' }, { exp: Math.floor(Date.now() / 1000) - 60 }), /expired/],
      ['audience', hs({ tenant: 'acme' }, { aud: 'someone-else' }), /"aud"/],
      ['issuer', hs({ tenant: 'acme' }, { iss: 'https://evil.test' }), /"iss"/],
      ['signature', hs({ tenant: 'acme' }, { secret: 'another-secret-0123456789abcdef012345' }), /signature/],
      ['tenant', hs({ sub: 'x' }), /tenant/],
      ['bad tenant', hs({ tenant: '../acme' }), /tenant/],
      ['no exp', new SignJWT({ tenant: 'acme' }).setProtectedHeader({ alg: 'HS256' }).setIssuer(ISS).setAudience(AUD).sign(new TextEncoder().encode(SECRET)), /exp/],
    ];
    for (const [what, tok, msg] of cases) {
      await assert.rejects(v.verify(await tok), (err: Error) => err instanceof JwtError && msg.test(err.message), what);
    }
    // alg "none" and garbage
    const none = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify({ tenant: 'acme', iss: ISS, aud: AUD, exp: 9e9 })).toString('base64url')}.`;
    await assert.rejects(v.verify(none), JwtError);
    await assert.rejects(v.verify('a.b.c'), JwtError);
  });

  it('PEM and JWK public keys; an HS256 token is refused by an RS256 verifier (no algorithm confusion)', async () => {
    const { publicKey, privateKey } = await generateKeyPair('RS256', { extractable: true });
    const pem = await exportSPKI(publicKey);
    const tok = await new SignJWT({ tenant: 'acme' }).setProtectedHeader({ alg: 'RS256' }).setIssuer(ISS).setAudience(AUD).setExpirationTime('1m').sign(privateKey);
    const v = await JwtVerifier.create({ issuer: ISS, audience: AUD, publicKey: pem });
    assert.equal((await v.verify(tok)).tenant, 'acme');
    const jwk = { ...(await exportJWK(publicKey)), alg: 'RS256' };
    const vj = await JwtVerifier.create({ issuer: ISS, audience: AUD, publicKey: JSON.stringify(jwk) });
    assert.equal((await vj.verify(tok)).tenant, 'acme');
    const confused = await new SignJWT({ tenant: 'acme' }).setProtectedHeader({ alg: 'HS256' }).setIssuer(ISS).setAudience(AUD).setExpirationTime('1m').sign(new TextEncoder().encode(pem));
    await assert.rejects(v.verify(confused), JwtError);
  });

  describe('JWKS over HTTP', () => {
    let url = '';
    let server: ReturnType<typeof createServer>;
    let sign: (claims: Record<string, unknown>) => Promise<string>;
    let fetches = 0;
    before(async () => {
      const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
      const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
      sign = (claims) => new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer(ISS).setAudience(AUD).setExpirationTime('1m').sign(privateKey);
      server = createServer((_req, res) => {
        fetches++;
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [jwk] }));
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
      url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`;
    });
    after(() => new Promise<void>((r) => server.close(() => r())));

    it('verifies against the issuer key set (fetched once, cached)', async () => {
      const v = await JwtVerifier.create({ issuer: ISS, audience: AUD, jwksUrl: url });
      assert.equal((await v.verify(await sign({ tenant: 'acme' }))).tenant, 'acme');
      assert.equal((await v.verify(await sign({ tenant: 'bob' }))).tenant, 'bob');
      assert.equal(fetches, 1);
      const { privateKey: other } = await generateKeyPair('ES256');
      const forged = await new SignJWT({ tenant: 'acme' }).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer(ISS).setAudience(AUD).setExpirationTime('1m').sign(other);
      await assert.rejects(v.verify(forged), /signature/);
    });
  });
});

describe('service tokens', () => {
  it('HS256: the claims of the contract, verified by the backend key loader', async () => {
    const secret = 'service-secret-0123456789abcdef0123456789';
    const signer = await ServiceTokenSigner.create(secret);
    const tok = await signer.token('acme', 'adapters:write');
    const { payload, protectedHeader } = await jwtVerify(tok, await serviceKeyFrom(secret), { issuer: SERVICE_ISSUER, audience: SERVICE_AUDIENCE });
    assert.equal(protectedHeader.alg, 'HS256');
    assert.equal(payload.tenant, 'acme');
    assert.equal(payload.scope, 'adapters:write');
    assert.ok(payload.exp! - payload.iat! === 60);
    // cached per tenant+scope
    assert.equal(await signer.token('acme', 'adapters:write'), tok);
    assert.notEqual(await signer.token('bob'), tok);
  });

  it('EdDSA with a PKCS#8 private key; the backend verifies with the public PEM', async () => {
    const { publicKey, privateKey } = await generateKeyPair('EdDSA', { extractable: true, crv: 'Ed25519' });
    const signer = await ServiceTokenSigner.create(await exportPKCS8(privateKey));
    assert.equal(signer.alg, 'EdDSA');
    const tok = await signer.token('acme');
    const { payload } = await jwtVerify(tok, await serviceKeyFrom(await exportSPKI(publicKey)), { issuer: SERVICE_ISSUER, audience: SERVICE_AUDIENCE });
    assert.equal(payload.tenant, 'acme');
  });

  it('refuses weak secrets and public keys', async () => {
    await assert.rejects(ServiceTokenSigner.create('short'), /32 bytes/);
    const { publicKey } = await generateKeyPair('EdDSA', { extractable: true });
    await assert.rejects(ServiceTokenSigner.create(await exportSPKI(publicKey)), /private key/);
  });
});
