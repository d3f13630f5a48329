/**
 * A registry token service for e2e tests, as the distribution token spec describes it
 * (docs/spec/auth/token.md of distribution): `GET /token?service=…&scope=…` with Basic auth
 * answers `{token, access_token, expires_in, issued_at}`, the token a JWT signed (ES256) by a
 * throwaway key whose self-signed certificate is the registry's `rootcertbundle` and travels in
 * the JWT header as `x5c`. The registry that checks these tokens is the real one
 * (helpers/registry.ts, `tokenAuth`); only this issuer is ours.
 *
 * Each user is granted, of the actions a scope asks for, those the user may do. Every token
 * issued is counted per scope asked, so a test sees when a client came back for a new one.
 */
import { randomUUID, sign, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { execa } from 'execa';

/**
 * Distribution accepts a token until this long after its `exp` (clock-skew leeway,
 * registry/auth/token/token.go), so `exp` is set this much before the end of the lifetime the
 * client is told: the registry refuses a token when `expires_in` says it is over.
 */
const REGISTRY_LEEWAY_S = 60;

export interface TokenUser {
  password: string;
  /** the repository actions the user may be granted: `pull`, `push`, … */
  actions: string[];
}

export interface TokenServiceOptions {
  dir: string;
  /** the registry's `service`: the audience of the tokens */
  service: string;
  users: Record<string, TokenUser>;
  /** seconds; default 300 */
  lifetime?: number;
  /** the TLS certificate and key the service answers with (PEM files) */
  tls: { cert: string; key: string };
}

export interface TokenRequest {
  user: string | undefined;
  scopes: string[];
  /** what was granted, or the status of a refusal */
  granted: Array<{ type: string; name: string; actions: string[] }> | number;
}

export interface TokenService {
  /** the registry's `realm`: `https://127.0.0.1:PORT/token` */
  realm: string;
  issuer: string;
  /** the signing certificate (PEM): the registry's `rootcertbundle` */
  rootCertBundle: string;
  /**
   * tokens issued for a request naming `scope` (`repository:NAME:ACTIONS`; the order of the
   * actions does not matter: distribution writes them in its challenges in any order)
   */
  issued(scope: string): number;
  /** every request, in order */
  requests: TokenRequest[];
  /** seconds a token issued from now on lives */
  setLifetime(seconds: number): void;
  stop(): Promise<void>;
}

const base64url = (data: string | Buffer) => Buffer.from(data).toString('base64url');

/** `repository:lab/app:pull,push` → its parts; the name may hold colons (a port, a class). */
function parseScope(scope: string): { type: string; name: string; actions: string[] } | undefined {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first <= 0 || last === first) return undefined;
  return {
    type: scope.slice(0, first),
    name: scope.slice(first + 1, last),
    actions: scope
      .slice(last + 1)
      .split(',')
      .filter((a) => a !== ''),
  };
}

function scopeKey(scope: string): string {
  const parsed = parseScope(scope);
  return parsed ? `${parsed.type}:${parsed.name}:${[...parsed.actions].sort().join(',')}` : scope;
}

function basicUser(req: IncomingMessage): { user: string; password: string } | undefined {
  const [scheme, value] = (req.headers.authorization ?? '').split(' ');
  if (scheme?.toLowerCase() !== 'basic' || !value) return undefined;
  const decoded = Buffer.from(value, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

export async function startTokenService(options: TokenServiceOptions): Promise<TokenService> {
  const signingKey = join(options.dir, 'token-signer.key');
  const rootCertBundle = join(options.dir, 'token-signer.pem');
  await execa('openssl', [
    'req',
    '-x509',
    ...['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'],
    ...['-keyout', signingKey, '-out', rootCertBundle, '-days', '2'],
    ...['-subj', '/CN=imgctl test token signer'],
  ]);
  const key = await readFile(signingKey, 'utf8');
  const x5c = [new X509Certificate(await readFile(rootCertBundle)).raw.toString('base64')];
  const issuer = 'imgctl-test-token-service';
  let lifetime = options.lifetime ?? 300;
  const counts = new Map<string, number>();
  const requests: TokenRequest[] = [];

  const jwt = (subject: string, access: TokenRequest['granted']) => {
    const now = Math.floor(Date.now() / 1000);
    // whole seconds: rounded up, so a token lives at least `lifetime`
    const header = { typ: 'JWT', alg: 'ES256', x5c };
    const claims = {
      iss: issuer,
      sub: subject,
      aud: options.service,
      exp: now + 1 + lifetime - REGISTRY_LEEWAY_S,
      nbf: now - 1,
      iat: now,
      jti: randomUUID(),
      access,
    };
    const signed = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`;
    // JWS ES256 is r||s, not DER
    const signature = sign('sha256', Buffer.from(signed), { key, dsaEncoding: 'ieee-p1363' });
    return `${signed}.${base64url(signature)}`;
  };

  const answer = (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'https://token.invalid');
    const scopes = url.searchParams.getAll('scope').flatMap((s) => s.split(' ').filter(Boolean));
    const given = basicUser(req);
    const refuse = (status: number) => {
      requests.push({ user: given?.user, scopes, granted: status });
      res.writeHead(status, {
        'content-type': 'application/json',
        ...(status === 401 ? { 'www-authenticate': 'Basic realm="imgctl-test-token"' } : {}),
      });
      res.end(JSON.stringify({ details: status === 401 ? 'bad credentials' : 'bad request' }));
    };
    if (req.method !== 'GET' || url.pathname !== '/token') return refuse(404);
    if (url.searchParams.get('service') !== options.service) return refuse(400);
    const user = given && options.users[given.user];
    if (!given || !user || user.password !== given.password) return refuse(401);
    const granted = scopes.flatMap((scope) => {
      const asked = parseScope(scope);
      if (!asked) return [];
      const actions = asked.actions.filter((a) => user.actions.includes(a));
      return actions.length > 0 ? [{ ...asked, actions }] : [];
    });
    for (const key of new Set(scopes.map(scopeKey))) counts.set(key, (counts.get(key) ?? 0) + 1);
    requests.push({ user: given.user, scopes, granted });
    const token = jwt(given.user, granted);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify({
        token,
        access_token: token,
        expires_in: lifetime,
        issued_at: new Date().toISOString(),
      }),
    );
  };

  const server = createServer(
    { cert: await readFile(options.tls.cert), key: await readFile(options.tls.key) },
    answer,
  );
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    realm: `https://127.0.0.1:${port}/token`,
    issuer,
    rootCertBundle,
    issued: (scope) => counts.get(scopeKey(scope)) ?? 0,
    requests,
    setLifetime(seconds) {
      lifetime = seconds;
    },
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
