/**
 * Registry credentials and the registry's challenges.
 *
 * Credentials come from a file in the format container tools write (docker's config.json,
 * podman's and skopeo's auth.json): `{"auths": {"HOST[:PORT][/REPO…]": {"auth": base64(user:pass)}}}`
 * or `{"username", "password"}` in the entry. The file is the one given (`--registry-auth`), else
 * `$REGISTRY_AUTH_FILE`, else `~/.docker/config.json` when it exists. Credential helpers and
 * `identitytoken` (an OAuth2 refresh token) are not used: a note says so. Credentials never
 * appear in a message.
 *
 * Challenges (`WWW-Authenticate` of a 401): `Basic` — the credentials on every request after
 * it; `Bearer realm=…,service=…,scope=…` — a token from the realm (GET, with basic auth when
 * there are credentials), cached per scope until it expires or a 401 says it is no longer good.
 */
import { access, readFile } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { errorCode, ImgctlError } from '../util/errors.ts';
import { drain, header, type Http, readBody } from './http.ts';
import { isRetryableError, isRetryableStatus, RETRIES, retryDelay, waitToRetry } from './retry.ts';

export interface Credentials {
  username: string;
  password: string;
}

export interface CredentialLookup {
  credentials?: Credentials;
  /** the file read, when there was one */
  file?: string;
  /** what in the file was not used, once each (an identitytoken, a credential helper) */
  notes: string[];
}

export interface CredentialSources {
  authFile?: string;
  env?: NodeJS.ProcessEnv;
  home?: string;
}

interface AuthEntry {
  auth?: unknown;
  username?: unknown;
  password?: unknown;
  identitytoken?: unknown;
}

interface AuthFile {
  auths?: Record<string, AuthEntry>;
  credHelpers?: Record<string, unknown>;
  credsStore?: unknown;
}

/** `https://host:5000/v1/` → `host:5000/v1`: how a key of `auths` names a registry. */
function normalizeKey(key: string): string {
  return key
    .replace(/^[a-z]+:\/\//i, '')
    .replace(/\/+$/, '')
    .toLowerCase();
}

/** The file to read: the given one, $REGISTRY_AUTH_FILE, ~/.docker/config.json when it exists. */
async function chooseFile(sources: CredentialSources): Promise<string | undefined> {
  const given = sources.authFile ?? (sources.env ?? process.env).REGISTRY_AUTH_FILE;
  if (given) return given;
  const fallback = join(sources.home ?? homedir(), '.docker', 'config.json');
  return access(fallback).then(
    () => fallback,
    () => undefined,
  );
}

/**
 * The credentials for `registry` (HOST[:PORT]) and `repository`: the entry whose key is the
 * registry, or the longest `HOST/PATH` key the repository is under.
 */
export async function findCredentials(
  registry: string,
  repository: string,
  sources: CredentialSources = {},
): Promise<CredentialLookup> {
  const file = await chooseFile(sources);
  if (file === undefined) return { notes: [] };
  let parsed: AuthFile;
  try {
    parsed = JSON.parse(await readFile(file, 'utf8')) as AuthFile;
  } catch (error) {
    const why = error instanceof SyntaxError ? 'it is not JSON' : errorCode(error);
    throw new ImgctlError('USAGE', `cannot read the registry auth file ${file}: ${why}`, {
      hint: 'give a file as container tools write it: {"auths": {"HOST:PORT": {"auth": "base64 of user:password"}}}',
    });
  }
  const notes: string[] = [];
  const host = registry.toLowerCase();
  const full = `${host}/${repository}`;
  let best: { key: string; entry: AuthEntry } | undefined;
  for (const [key, entry] of Object.entries(parsed?.auths ?? {})) {
    const k = normalizeKey(key);
    const matches =
      k === host || full === k || (k.startsWith(`${host}/`) && full.startsWith(`${k}/`));
    if (matches && (best === undefined || k.length > best.key.length)) best = { key: k, entry };
  }
  const helper =
    parsed?.credHelpers?.[host] ?? (best === undefined ? parsed?.credsStore : undefined);
  if (helper !== undefined)
    notes.push(`${file}: credential helpers are not used; put the credentials in "auths"`);
  if (best === undefined) return { file, notes };
  const { key, entry } = best;
  const credentials = entryCredentials(file, key, entry);
  if (credentials === undefined && entry.identitytoken !== undefined)
    notes.push(
      `${file}: the identitytoken for ${key} is not used (imgctl reads "auth" or "username"/"password")`,
    );
  return { credentials, file, notes };
}

function entryCredentials(file: string, key: string, entry: AuthEntry): Credentials | undefined {
  if (typeof entry?.auth === 'string' && entry.auth !== '') {
    const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon <= 0)
      throw new ImgctlError(
        'USAGE',
        `auths["${key}"].auth in ${file} is not the base64 of user:password`,
      );
    return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
  }
  if (typeof entry?.username === 'string' && typeof entry.password === 'string')
    return { username: entry.username, password: entry.password };
  return undefined;
}

export interface Challenge {
  /** lowercase: `bearer`, `basic`, … */
  scheme: string;
  /** lowercase names */
  params: Record<string, string>;
}

const TOKEN = /\s*,?\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)(?:\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*))?/y;

/** The challenges of a `WWW-Authenticate` header (RFC 9110 §11.6.1), in order. */
export function parseChallenges(value: string): Challenge[] {
  const challenges: Challenge[] = [];
  TOKEN.lastIndex = 0;
  for (let m = TOKEN.exec(value); m !== null && m[0] !== ''; m = TOKEN.exec(value)) {
    const [, name, raw] = m;
    if (raw === undefined) {
      challenges.push({ scheme: name!.toLowerCase(), params: {} });
    } else if (challenges.length > 0) {
      const unquoted = raw.startsWith('"') ? raw.slice(1, -1).replace(/\\(.)/g, '$1') : raw;
      challenges.at(-1)!.params[name!.toLowerCase()] = unquoted;
    }
  }
  return challenges;
}

interface Token {
  value: string;
  /** ms since the epoch; Infinity when the service gave no lifetime */
  expires: number;
  challenge: Challenge;
  scopes: string[];
}

export interface Authenticator {
  /** the Authorization header for a request needing `scope`, when one is known */
  authorization(scope: string): Promise<string | undefined>;
  /**
   * After a 401 to a request needing `scope` (plus `extraScopes`, e.g. a mount's source): learns
   * the challenge and gets what it asks for. False when nothing new can be tried (the
   * credentials were refused).
   */
  challenged(
    challenge: string | undefined,
    scope: string,
    extraScopes?: string[],
  ): Promise<boolean>;
  /** for messages: where the credentials came from */
  describe(): Promise<string>;
}

const TOKEN_LIMIT = 1024 * 1024;
/**
 * a token is renewed this long before the end of its lifetime, or after half of it when it is
 * short (else a token service giving tokens of a few seconds would be asked before every request)
 */
const TOKEN_MARGIN_MS = 10_000;
/** the lifetime of a token whose answer gives none (distribution's token spec: 60 seconds) */
const DEFAULT_TOKEN_LIFETIME_S = 60;

/** The credentials (looked up once) and tokens of one Registry. */
export function makeAuthenticator(
  http: Http,
  registry: string,
  lookup: () => Promise<CredentialLookup>,
  settings: { insecureHttp?: boolean; log?: (line: string) => void; signal?: AbortSignal },
): Authenticator {
  let found: Promise<CredentialLookup> | undefined;
  const credentials = () =>
    (found ??= lookup().then((result) => {
      for (const note of result.notes) settings.log?.(note);
      return result;
    }));
  const tokens = new Map<string, Token>();
  let basic = false;
  const basicHeader = (c: Credentials) =>
    `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
  const describe = async () => {
    const { file, credentials: c } = await credentials();
    return c ? `the credentials for ${registry} in ${file}` : 'access without credentials';
  };
  const noCredentials = async () => {
    const { file } = await credentials();
    return new ImgctlError('USAGE', `${registry} asks for credentials and there are none`, {
      hint: file
        ? `add "auths": {"${registry}": {"auth": "<base64 of user:password>"}} to ${file}`
        : `give a credentials file with --registry-auth FILE (or $REGISTRY_AUTH_FILE, or ~/.docker/config.json)`,
    });
  };

  /**
   * GET a token: 429, 5xx and broken connections tried again, as requests to the registry are
   * (a long push asks for one every minute or so, and one failed answer would end it).
   */
  const askTokenService = async (url: URL, headers: Record<string, string>) => {
    for (let attempt = 0; ; attempt++) {
      let res: IncomingMessage;
      try {
        res = await http.send('GET', url, headers);
      } catch (error) {
        if (attempt >= RETRIES || !isRetryableError(error, settings.signal)) throw error;
        const why = `the token request to ${url.origin}: ${errorCode(error)}`;
        await waitToRetry(retryDelay(attempt, undefined), why, settings.log, settings.signal);
        continue;
      }
      const status = res.statusCode ?? 0;
      if (attempt >= RETRIES || !isRetryableStatus(status)) return res;
      drain(res);
      const wait = retryDelay(attempt, header(res, 'retry-after'));
      const why = `the token request to ${url.origin}: ${status}`;
      await waitToRetry(wait, why, settings.log, settings.signal);
    }
  };

  const fetchToken = async (challenge: Challenge, scopes: string[]): Promise<Token> => {
    const realm = challenge.params.realm;
    let url: URL;
    try {
      url = new URL(realm ?? '');
    } catch {
      throw new ImgctlError('FAILED', `${registry} asks for a bearer token without a valid realm`);
    }
    const { credentials: c } = await credentials();
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && settings.insecureHttp))
      throw new ImgctlError(
        'FAILED',
        `${registry} sends clients to ${url.origin} for tokens, which is not https`,
        { hint: 'a token service over plain http is used only with --insecure-http' },
      );
    if (challenge.params.service) url.searchParams.set('service', challenge.params.service);
    for (const scope of scopes) url.searchParams.append('scope', scope);
    const res = await askTokenService(url, {
      accept: 'application/json',
      ...(c ? { authorization: basicHeader(c) } : {}),
    });
    const body = await readBody(
      res,
      TOKEN_LIMIT,
      () => new ImgctlError('FAILED', `the token service of ${registry} sent over 1 MiB`),
    );
    if (res.statusCode === 401 || res.statusCode === 403)
      throw new ImgctlError(
        'USAGE',
        `the token service of ${registry} (${url.origin}) refused ${await describe()} (${res.statusCode})`,
        { hint: 'check the user and password in that file' },
      );
    if (res.statusCode !== 200)
      throw new ImgctlError(
        'FAILED',
        `the token service of ${registry} (${url.origin}) answered ${res.statusCode}`,
      );
    let parsed: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      parsed = JSON.parse(body.toString('utf8')) as typeof parsed;
    } catch {
      throw new ImgctlError('FAILED', `the token service of ${registry} sent something not JSON`);
    }
    const value = parsed.token ?? parsed.access_token;
    if (typeof value !== 'string' || value === '')
      throw new ImgctlError('FAILED', `the token service of ${registry} sent no token`);
    const seconds =
      typeof parsed.expires_in === 'number' && parsed.expires_in > 0
        ? parsed.expires_in
        : DEFAULT_TOKEN_LIFETIME_S;
    const lifetime = seconds * 1000;
    const margin = Math.min(TOKEN_MARGIN_MS, lifetime / 2);
    return { value, expires: Date.now() + lifetime - margin, challenge, scopes };
  };

  return {
    describe,
    async authorization(scope) {
      if (basic) {
        const { credentials: c } = await credentials();
        return c ? basicHeader(c) : undefined;
      }
      let token = tokens.get(scope);
      if (token && token.expires <= Date.now()) {
        token = await fetchToken(token.challenge, token.scopes);
        tokens.set(scope, token);
      }
      return token ? `Bearer ${token.value}` : undefined;
    },
    async challenged(value, scope, extraScopes = []) {
      const challenges = parseChallenges(value ?? '');
      const bearer = challenges.find((c) => c.scheme === 'bearer');
      if (bearer) {
        basic = false;
        const asked = (bearer.params.scope ?? '').split(' ').filter((s) => s !== '');
        const scopes = [...new Set([...(asked.length > 0 ? asked : [scope]), ...extraScopes])];
        const previous = tokens.get(scope);
        const token = await fetchToken(bearer, scopes);
        // The same token again for the same scopes: the service's answer will not change.
        if (previous?.value === token.value) return false;
        tokens.set(scope, token);
        return true;
      }
      if (challenges.some((c) => c.scheme === 'basic')) {
        const { credentials: c } = await credentials();
        if (c === undefined) throw await noCredentials();
        if (basic) return false;
        basic = true;
        return true;
      }
      throw new ImgctlError(
        'FAILED',
        `${registry} answered 401 with ${value ? `a challenge imgctl does not know (${value.slice(0, 60)})` : 'no challenge'}`,
      );
    },
  };
}
