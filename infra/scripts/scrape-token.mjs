#!/usr/bin/env node
// Mints a service token for Prometheus to scrape a backend's /metrics. A backend started with
// --service-key answers only /health without a gateway token (docs/gateway-backend-contract.md),
// so a scraper needs one: claims iss "switchboard-gateway", aud "switchboard-backend", tenant
// "metrics" (by default), exp in --days days. Sign with the same key the gateway signs with: the
// HS256 shared secret, or the PEM private key (PKCS#8) whose public half is the backend's key.
//
//   SWITCHBOARD_SERVICE_KEY=... node infra/scripts/scrape-token.mjs [--days 30] [--tenant metrics] [--out FILE]
//
// The token is an API credential for that tenant until it expires: keep it in a Secret, rotate it.
import { createPrivateKey, createSecretKey } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { SignJWT } from 'jose';

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : fallback;
}

const keyText = process.env.SWITCHBOARD_SERVICE_SIGNING_KEY || process.env.SWITCHBOARD_SERVICE_KEY;
if (!keyText) {
  process.stderr.write('scrape-token: set SWITCHBOARD_SERVICE_KEY (HS256 secret) or SWITCHBOARD_SERVICE_SIGNING_KEY (PEM private key)\n');
  process.exit(2);
}
const days = Number(arg('days', '30'));
const tenant = arg('tenant', 'metrics');
if (!Number.isFinite(days) || days <= 0) throw new Error('--days must be a positive number');
if (!/^[a-z0-9][a-z0-9-]{0,62}$/.test(tenant)) throw new Error('--tenant must match [a-z0-9][a-z0-9-]{0,62}');

let key;
let alg;
if (keyText.includes('-----BEGIN')) {
  key = createPrivateKey(keyText);
  const type = key.asymmetricKeyType;
  alg = type === 'ed25519' ? 'EdDSA' : type === 'ec' ? 'ES256' : type === 'rsa' ? 'RS256' : null;
  if (!alg) throw new Error(`unsupported private key type ${type}`);
} else {
  if (Buffer.byteLength(keyText) < 32) throw new Error('a shared secret must be at least 32 bytes');
  key = createSecretKey(Buffer.from(keyText, 'utf-8'));
  alg = 'HS256';
}

const token = await new SignJWT({ tenant, scope: 'metrics' })
  .setProtectedHeader({ alg })
  .setIssuer('switchboard-gateway')
  .setAudience('switchboard-backend')
  .setIssuedAt()
  .setExpirationTime(Math.floor(Date.now() / 1000) + Math.round(days * 86400))
  .sign(key);

const out = arg('out');
if (out) writeFileSync(out, token, { mode: 0o644 });
else process.stdout.write(`${token}\n`);
