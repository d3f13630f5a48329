/**
 * A real OCI registry on 127.0.0.1 for e2e tests and benches: Debian's `docker-registry`
 * (distribution 2.8) run as `docker-registry serve CONFIG.yml` with a config written here —
 * filesystem storage in a temp dir, TLS with a certificate for 127.0.0.1/localhost signed by a
 * throwaway CA, htpasswd (bcrypt) auth, or token auth (bearer tokens from a token service the
 * helper starts, helpers/token-service.ts). Free of vitest so the benches use it too; the caller
 * stops it.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { stringify } from 'yaml';
import { freePort } from './sshd.ts';
import { startTokenService, type TokenService } from './token-service.ts';

export interface StartRegistryOptions {
  /** htpasswd auth (a user and a random password); default false */
  auth?: boolean;
  /**
   * token auth instead: the registry sends clients to a token service for bearer tokens; its
   * user (may pull and push) and a pull-only user have random passwords. Needs `tls`.
   */
  tokenAuth?: boolean | { lifetime?: number };
  /** HTTPS with a certificate signed by a throwaway CA; default false */
  tls?: boolean;
  /** how long to wait until /v2/ answers, ms */
  timeoutMs?: number;
}

export interface TestRegistry {
  /** `127.0.0.1:PORT`, as an `oci://` reference names it */
  url: string;
  port: number;
  /** the CA that signed the registry's certificate (PEM), with `tls` */
  caFile?: string;
  /** the registry's certificate (for 127.0.0.1 and localhost) and its key, with `tls` */
  certFile?: string;
  keyFile?: string;
  /** a directory holding only `ca.crt`, for skopeo's `--cert-dir`, with `tls` */
  certDir?: string;
  /** a container tools' config.json (`auths.HOST.auth`) with the credentials (0600), with `auth` */
  authFile?: string;
  user?: string;
  password?: string;
  /** with `tokenAuth`: the token service, and an auth file for a user who may only pull */
  tokenService?: TokenService;
  pullOnlyAuthFile?: string;
  /** the registry's storage root */
  storageDir: string;
  /** everything the registry logged so far */
  log(): string;
  /** SIGTERM, then waits for the registry to exit and removes its temp dir; safe to call twice */
  stop(): Promise<void>;
}

/** the registry's `service` with `tokenAuth`: the audience of its tokens */
const TOKEN_SERVICE = 'imgctl-test-registry';

const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** A throwaway CA and a server certificate for 127.0.0.1 and localhost signed by it. */
async function makeCertificates(dir: string): Promise<{ ca: string; cert: string; key: string }> {
  const ca = join(dir, 'ca.pem');
  const caKey = join(dir, 'ca.key');
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  await execa('openssl', [
    'req',
    '-x509',
    ...EC_KEY,
    '-keyout',
    caKey,
    '-out',
    ca,
    '-days',
    '2',
    '-subj',
    '/CN=imgctl test registry CA',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign',
  ]);
  await execa('openssl', [
    'req',
    '-x509',
    ...EC_KEY,
    '-keyout',
    key,
    '-out',
    cert,
    '-days',
    '2',
    '-subj',
    '/CN=127.0.0.1',
    '-CA',
    ca,
    '-CAkey',
    caKey,
    '-addext',
    'subjectAltName=IP:127.0.0.1,DNS:localhost',
    '-addext',
    'basicConstraints=critical,CA:FALSE',
  ]);
  return { ca, cert, key };
}

/** The status of GET /v2/, or undefined while nothing answers. */
function probe(port: number, ca: Buffer | undefined): Promise<number | undefined> {
  return new Promise((resolve) => {
    const options = { host: '127.0.0.1', port, path: '/v2/', timeout: 2000 };
    const req = ca ? httpsRequest({ ...options, ca }) : httpRequest(options);
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(undefined));
    req.end();
  });
}

export async function startRegistry(options: StartRegistryOptions = {}): Promise<TestRegistry> {
  const dir = await mkdtemp(join(tmpdir(), 'imgctl-registry-'));
  try {
    return await launch(dir, options);
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

async function launch(dir: string, options: StartRegistryOptions): Promise<TestRegistry> {
  const storageDir = join(dir, 'storage');
  await mkdir(storageDir);
  const certs = options.tls ? await makeCertificates(dir) : undefined;
  let certDir: string | undefined;
  if (certs) {
    certDir = join(dir, 'certs.d');
    await mkdir(certDir);
    await writeFile(join(certDir, 'ca.crt'), await readFile(certs.ca));
  }
  if (options.tokenAuth && !certs)
    throw new Error('startRegistry: tokenAuth needs tls (clients fetch tokens over https only)');
  const user = options.auth || options.tokenAuth ? 'imgctl-test' : undefined;
  const password = user ? randomBytes(18).toString('base64url') : undefined;
  const pullOnly = { user: 'imgctl-test-reader', password: randomBytes(18).toString('base64url') };
  let auth: Record<string, unknown> | undefined;
  let tokenService: TokenService | undefined;
  if (options.tokenAuth && certs && user && password) {
    tokenService = await startTokenService({
      dir,
      service: TOKEN_SERVICE,
      users: {
        [user]: { password, actions: ['pull', 'push'] },
        [pullOnly.user]: { password: pullOnly.password, actions: ['pull'] },
      },
      lifetime: typeof options.tokenAuth === 'object' ? options.tokenAuth.lifetime : undefined,
      tls: certs,
    });
    const { realm, issuer, rootCertBundle: rootcertbundle } = tokenService;
    auth = { token: { realm, service: TOKEN_SERVICE, issuer, rootcertbundle } };
  } else if (user && password) {
    const htpasswd = join(dir, 'htpasswd');
    // -i: the password comes on stdin, not on htpasswd's command line
    const { stdout } = await execa('htpasswd', ['-Bin', user], { input: password });
    await writeFile(htpasswd, `${stdout.trim()}\n`, { mode: 0o600 });
    auth = { htpasswd: { realm: 'imgctl-test', path: htpasswd } };
  }
  let registry: Omit<TestRegistry, 'authFile' | 'pullOnlyAuthFile'>;
  try {
    registry = await serve(dir, options, { storageDir, certs, certDir, auth });
  } catch (error) {
    await tokenService?.stop();
    throw error;
  }
  const authFile = user && password ? join(dir, 'auth.json') : undefined;
  if (authFile) await writeAuthFile(authFile, registry.url, user!, password!);
  const pullOnlyAuthFile = tokenService ? join(dir, 'auth-pull-only.json') : undefined;
  if (pullOnlyAuthFile)
    await writeAuthFile(pullOnlyAuthFile, registry.url, pullOnly.user, pullOnly.password);
  return {
    ...registry,
    authFile,
    user,
    password,
    tokenService,
    pullOnlyAuthFile,
    async stop() {
      await tokenService?.stop();
      await registry.stop();
    },
  };
}

/** Writes a container tools' auth file for `registry` with `user:password` (0600). */
async function writeAuthFile(file: string, registry: string, user: string, password: string) {
  const auth = Buffer.from(`${user}:${password}`).toString('base64');
  await writeFile(file, JSON.stringify({ auths: { [registry]: { auth } } }), { mode: 0o600 });
}

/** Starts docker-registry on a free port (another one when the port was taken meanwhile). */
async function serve(
  dir: string,
  options: StartRegistryOptions,
  setup: {
    storageDir: string;
    certs: { ca: string; cert: string; key: string } | undefined;
    certDir: string | undefined;
    auth: Record<string, unknown> | undefined;
  },
): Promise<Omit<TestRegistry, 'authFile' | 'pullOnlyAuthFile'>> {
  const { storageDir, certs, certDir, auth } = setup;
  const ca = certs ? await readFile(certs.ca) : undefined;

  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const config = join(dir, 'config.yml');
    await writeFile(
      config,
      stringify({
        version: 0.1,
        log: { level: 'info', accesslog: { disabled: false } },
        storage: {
          filesystem: { rootdirectory: storageDir },
          delete: { enabled: true },
          maintenance: { uploadpurging: { enabled: false } },
        },
        http: {
          addr: `127.0.0.1:${port}`,
          secret: randomBytes(24).toString('hex'),
          ...(certs ? { tls: { certificate: certs.cert, key: certs.key } } : {}),
        },
        ...(auth ? { auth } : {}),
      }),
    );
    const proc: ChildProcess = spawn('docker-registry', ['serve', config], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH, HOME: dir, LANG: 'C' },
    });
    let log = '';
    const append = (chunk: string) => {
      log += chunk;
    };
    proc.stdout!.setEncoding('utf8').on('data', append);
    proc.stderr!.setEncoding('utf8').on('data', append);
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    let gone = false;
    void exited.then(() => (gone = true));
    const deadline = Date.now() + (options.timeoutMs ?? 20_000);
    let status: number | undefined;
    while (!gone && Date.now() < deadline) {
      status = await probe(port, ca);
      if (status === 200 || status === 401) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    if (status !== 200 && status !== 401) {
      if (!gone) proc.kill('SIGKILL');
      await exited;
      if (attempt < 3 && /address already in use/i.test(log)) continue;
      throw new Error(
        `docker-registry did not start (GET /v2/: ${status ?? 'no answer'}):\n${log}`,
      );
    }
    let stopped = false;
    return {
      url: `127.0.0.1:${port}`,
      port,
      caFile: certs?.ca,
      certFile: certs?.cert,
      keyFile: certs?.key,
      certDir,
      storageDir,
      log: () => log,
      async stop() {
        if (stopped) return;
        stopped = true;
        if (!gone) proc.kill('SIGTERM');
        await exited;
        await rm(dir, { recursive: true, force: true });
      },
    };
  }
}
