/**
 * The remote shell of `imgctl provision` (docs/provision.md): an ssh2 client with OpenSSH's
 * habits — key authentication (the ssh agent, key files), host keys checked against
 * known_hosts (plain, hashed `|1|` and `[host]:port` entries; unknown or changed keys refused,
 * `acceptNew` adds unknown ones and never changed ones), a connect timeout and keepalives —
 * plus remote commands built by one strict quoting function, whose stdin may carry bytes (a
 * compressed file, for instance).
 */
import { createHash, createHmac } from 'node:crypto';
import { appendFile, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import ssh2, {
  type AgentAuthMethod,
  type Client,
  type ClientChannel,
  type PublicKeyAuthMethod,
} from 'ssh2';
import { ImgctlError } from '../util/errors.ts';
import { printable } from '../util/names.ts';
import { ensureDir } from '../store/store.ts';

// ssh2 is CommonJS: its named exports are not visible to ESM imports.
const { Client: SshClient, utils } = ssh2;

export interface SshTarget {
  user: string;
  host: string;
  port: number;
}

const USER = /^[a-z_][a-z0-9_.-]*$/;
const HOST_NAME = /^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})$/;
const IPV6 = /^[0-9A-Fa-f:.]+$/;

/**
 * `[user@]host[:port]` (an IPv6 address in brackets: `[2001:db8::1]:2222`), as the `address`
 * of a system. Throws USAGE for anything else; nothing of it ever reaches a shell.
 */
export function parseSshAddress(spec: string, defaultUser: string): SshTarget {
  const bad = (why: string) =>
    new ImgctlError('USAGE', `not an SSH target '${printable(spec)}': ${why}`, {
      hint: 'a target is [user@]host[:port], e.g. root@hv1.example.com:2222',
    });
  let rest = spec;
  let user = defaultUser;
  const at = rest.lastIndexOf('@');
  if (at >= 0) {
    user = rest.slice(0, at);
    rest = rest.slice(at + 1);
    if (!USER.test(user)) throw bad('invalid user name');
  }
  let host: string;
  let port = 22;
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(rest);
  if (bracket) {
    host = bracket[1]!;
    if (!IPV6.test(host)) throw bad('only an IPv6 address goes in brackets');
    if (bracket[2] !== undefined) port = Number(bracket[2]);
  } else {
    const colon = rest.split(':');
    if (colon.length > 2) throw bad('an IPv6 address must be written in brackets: [ADDR]:PORT');
    host = colon[0]!;
    if (colon[1] !== undefined) {
      if (!/^\d{1,5}$/.test(colon[1])) throw bad('the port is not a number');
      port = Number(colon[1]);
    }
    if (!HOST_NAME.test(host) || host.includes('..')) throw bad('invalid host name');
  }
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw bad('the port is out of range');
  return { user, host, port };
}

/** `user@host` with `:port` when it is not 22 (IPv6 in brackets), for messages and tables. */
export function formatSshTarget(t: SshTarget): string {
  const host = t.host.includes(':') ? `[${t.host}]` : t.host;
  return `${t.user}@${host}${t.port === 22 ? '' : `:${t.port}`}`;
}

/**
 * One argument of a remote command, quoted for a POSIX shell (the remote login shell parses
 * every SSH command): always single-quoted, a `'` written as `'\''`. No character has a meaning
 * inside single quotes, so nothing an argument holds is expanded or run. NUL cannot be passed.
 */
export function quoteShellArg(arg: string): string {
  if (arg.includes('\0'))
    throw new ImgctlError('USAGE', 'an argument of a remote command contains a NUL byte');
  return `'${arg.replaceAll("'", `'\\''`)}'`;
}

export interface CommandOptions {
  /**
   * Variables the remote shell reads from the first lines of stdin, one each, and exports
   * before the command runs (secrets never put on a command line); checked against
   * [A-Z_][A-Z0-9_]*.
   */
  secretEnv?: readonly string[];
  /** keep stdin open while the command runs; its end (EOF) stops the command with SIGTERM */
  supervise?: boolean;
}

/**
 * Runs "$@" (stdin /dev/null) in the background; a watcher reads the session's stdin (fd 3) to
 * its end, then sends the command SIGTERM; the shell exits with the command's status. sshd
 * refuses signal requests for root sessions, so EOF is how a cancel — or a dropped connection —
 * reaches the command.
 */
const SUPERVISE_SCRIPT = [
  'exec 3<&0',
  '"$@" </dev/null & child=$!',
  '{ cat <&3 >/dev/null 2>&1; kill -TERM "$child" 2>/dev/null; } >/dev/null 2>&1 & watcher=$!',
  'wait "$child"; status=$?',
  'kill "$watcher" 2>/dev/null',
  'exit "$status"',
].join('\n');

/**
 * The command line the remote shell runs: every argument quoted by quoteShellArg, nothing else
 * but constant text around them (see CommandOptions).
 */
export function shellCommand(argv: readonly string[], options: CommandOptions = {}): string {
  if (argv.length === 0) throw new Error('shellCommand: empty argv');
  const { secretEnv = [], supervise } = options;
  for (const name of secretEnv)
    if (!/^[A-Z_][A-Z0-9_]*$/.test(name)) throw new Error(`bad variable name ${name}`);
  const read = secretEnv.map((name) => `IFS= read -r ${name} && export ${name} && `).join('');
  if (supervise)
    return `${read}exec ${['/bin/sh', '-c', SUPERVISE_SCRIPT, 'imgctl-run', ...argv].map(quoteShellArg).join(' ')}`;
  const command = argv.map(quoteShellArg).join(' ');
  return read === '' ? command : `${read}exec ${command}`;
}

// ---- known_hosts

export interface KnownHostEntry {
  marker?: 'cert-authority' | 'revoked';
  /** the host field as written: patterns separated by commas, or one `|1|salt|hash` */
  hosts: string;
  keyType: string;
  key: Buffer;
  /** where it came from, for messages: FILE:LINE */
  source: string;
}

/** The entries of an OpenSSH known_hosts text; malformed lines are skipped, as ssh does. */
export function parseKnownHosts(text: string, file = 'known_hosts'): KnownHostEntry[] {
  const entries: KnownHostEntry[] = [];
  text.split('\n').forEach((raw, index) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const fields = line.split(/\s+/);
    let marker: KnownHostEntry['marker'];
    if (fields[0]!.startsWith('@')) {
      const m = fields.shift()!.slice(1);
      if (m !== 'cert-authority' && m !== 'revoked') return;
      marker = m;
    }
    const [hosts, keyType, b64] = fields;
    if (!hosts || !keyType || !b64 || !/^[A-Za-z0-9+/]+={0,3}$/.test(b64)) return;
    const key = Buffer.from(b64, 'base64');
    // The blob starts with its own type: a line whose two disagree is not a key.
    if (blobKeyType(key) !== keyType) return;
    entries.push({ marker, hosts, keyType, key, source: `${file}:${index + 1}` });
  });
  return entries;
}

/** The key type named at the start of an SSH public key blob (string: uint32 length + bytes). */
export function blobKeyType(blob: Buffer): string | undefined {
  if (blob.length < 4) return undefined;
  const length = blob.readUInt32BE(0);
  if (length === 0 || length > 64 || blob.length < 4 + length) return undefined;
  return blob.subarray(4, 4 + length).toString('latin1');
}

/** The name known_hosts files this host under: `host`, or `[host]:port` when the port is not 22. */
function knownHostName(host: string, port: number): string {
  const name = host.toLowerCase();
  return port === 22 ? name : `[${name}]:${port}`;
}

/** Whether one host field (comma-separated patterns with `*`, `?`, `!`; or hashed) names `name`. */
export function hostFieldMatches(field: string, name: string): boolean {
  if (field.startsWith('|1|')) {
    const [, , salt, hash] = field.split('|');
    if (!salt || !hash) return false;
    const digest = createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest('base64');
    return digest === hash;
  }
  let matched = false;
  for (const raw of field.split(',')) {
    const negated = raw.startsWith('!');
    const pattern = (negated ? raw.slice(1) : raw).toLowerCase();
    if (wildcard(pattern).test(name)) {
      if (negated) return false;
      matched = true;
    }
  }
  return matched;
}

function wildcard(pattern: string): RegExp {
  const body = pattern
    .split('')
    .map((c) => (c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[\\^$.+()|[\]{}]/g, '\\$&')))
    .join('');
  return new RegExp(`^${body}$`);
}

export type HostKeyStatus = 'known' | 'unknown' | 'changed' | 'revoked';

export interface HostKeyCheck {
  status: HostKeyStatus;
  /** key types on file for this host (their algorithms are preferred when negotiating) */
  knownTypes: string[];
  /** the entries that name the host with another key (status changed) */
  conflicting: string[];
}

/**
 * OpenSSH's verdict on the key a host presented: `revoked` when any @revoked line holds it;
 * `known` when a line for the host holds it; `changed` when lines for the host hold only other
 * keys (of any type: stricter than ssh, which asks about a new key type); else `unknown`.
 * @cert-authority lines are not used (host certificates are not supported).
 */
export function checkHostKey(
  entries: readonly KnownHostEntry[],
  host: string,
  port: number,
  key: Buffer,
): HostKeyCheck {
  const name = knownHostName(host, port);
  if (entries.some((e) => e.marker === 'revoked' && e.key.equals(key)))
    return { status: 'revoked', knownTypes: [], conflicting: [] };
  const forHost = entries.filter((e) => e.marker === undefined && hostFieldMatches(e.hosts, name));
  const knownTypes = [...new Set(forHost.map((e) => e.keyType))];
  if (forHost.some((e) => e.key.equals(key)))
    return { status: 'known', knownTypes, conflicting: [] };
  if (forHost.length > 0)
    return { status: 'changed', knownTypes, conflicting: forHost.map((e) => e.source) };
  return { status: 'unknown', knownTypes, conflicting: [] };
}

/** The known_hosts line `accept-new` appends: plain (reviewable), `[host]:port` off port 22. */
export function knownHostsLine(host: string, port: number, key: Buffer): string {
  return `${knownHostName(host, port)} ${blobKeyType(key)} ${key.toString('base64')}\n`;
}

export interface KnownHosts {
  check(host: string, port: number, key: Buffer): HostKeyCheck;
  /** appends the key to the writable file (and to what `check` sees from now on) */
  accept(host: string, port: number, key: Buffer): Promise<void>;
  /** the file `accept` appends to */
  readonly file: string;
}

/**
 * Reads known_hosts files (a missing one is empty); `accept` appends to `writeFile` (made 0600
 * in a 0700 directory when new), one append at a time, and the new entry is seen by every
 * later check of this process, so parallel connections to one host add it once.
 */
export async function openKnownHosts(files: string[], writeFile: string): Promise<KnownHosts> {
  const entries: KnownHostEntry[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw new ImgctlError(
        'USAGE',
        `cannot read known hosts ${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`,
      );
    }
    entries.push(...parseKnownHosts(text, file));
  }
  let queue: Promise<unknown> = Promise.resolve();
  return {
    file: writeFile,
    check: (host, port, key) => checkHostKey(entries, host, port, key),
    accept(host, port, key) {
      const next = queue.then(async () => {
        if (checkHostKey(entries, host, port, key).status === 'known') return;
        await ensureDir(dirname(writeFile), 0o700);
        const line = knownHostsLine(host, port, key);
        await appendFile(writeFile, line, { mode: 0o600 });
        entries.push(...parseKnownHosts(line, writeFile));
      });
      queue = next.catch(() => undefined);
      return next;
    },
  };
}

// ---- authentication

/** A private key file for publickey authentication, parsed up front so mistakes show early. */
export async function loadIdentity(file: string): Promise<Buffer> {
  let data: Buffer;
  try {
    data = await readFile(file);
  } catch (error) {
    throw new ImgctlError(
      'USAGE',
      `cannot read identity ${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`,
    );
  }
  const parsed = utils.parseKey(data);
  if (parsed instanceof Error) {
    const encrypted = /passphrase|encrypt/i.test(parsed.message);
    throw new ImgctlError(
      'USAGE',
      encrypted
        ? `identity ${file} is encrypted (passphrases are not asked for)`
        : `identity ${file} is not a private key imgctl can read: ${parsed.message}`,
      { hint: encrypted ? `add it to your ssh agent: ssh-add ${file}` : undefined },
    );
  }
  const key = Array.isArray(parsed) ? parsed[0] : parsed;
  if (!key?.isPrivateKey())
    throw new ImgctlError('USAGE', `identity ${file} is a public key, not a private key`, {
      hint: `give the private key (${file.replace(/\.pub$/, '')})`,
    });
  return data;
}

// ---- the connection

export interface ExecOptions {
  /**
   * Secrets for the command's environment, never on a command line: sent as the first lines of
   * stdin, one each, read by the remote shell into `name` and exported.
   */
  secretEnv?: Array<{ name: string; value: string }>;
  /**
   * Keep stdin open while the command runs, and stop it (SIGTERM) by ending stdin on abort.
   * Without it stdin is ended at once and an abort closes the channel.
   */
  supervise?: boolean;
  /** bytes the command reads on stdin after the secrets, then EOF (not with `supervise`) */
  stdin?: Uint8Array;
  /** each line the command writes to stderr, as it arrives */
  onStderrLine?(line: string): void;
  signal?: AbortSignal;
  /** stdout kept beyond this many bytes is an error (default 16 MiB) */
  maxStdout?: number;
}

export interface ExecResult {
  /** null when the command was killed by a signal or the channel closed without a status */
  exitCode: number | null;
  signal?: string;
  stdout: string;
  stderr: string;
}

/** What provisioning needs of a remote machine; tests pass fakes, imgctl an ssh2 connection. */
export interface RemoteShell {
  exec(argv: readonly string[], options?: ExecOptions): Promise<ExecResult>;
  close(): void;
}

export interface ConnectOptions {
  target: SshTarget;
  knownHosts: KnownHosts;
  /** accept (and record) an unknown host key; a changed key is refused regardless */
  acceptNew?: boolean;
  /** private keys (file contents) tried in order after the agent */
  identities?: Buffer[];
  /** the ssh agent socket ($SSH_AUTH_SOCK) */
  agentSocket?: string;
  /** from the TCP connect to the end of authentication; default 15 s */
  connectTimeoutMs?: number;
  /** keepalive interval; the connection is dropped after 3 unanswered; default 15 s */
  keepaliveIntervalMs?: number;
  /** grace between SIGTERM and closing the channel when an exec is cancelled; default 10 s */
  cancelGraceMs?: number;
  signal?: AbortSignal;
}

/** Host key algorithms ssh2 offers, strongest first; ssh-dss is never offered. */
const HOST_KEY_ALGORITHMS = [
  'ssh-ed25519',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'rsa-sha2-512',
  'rsa-sha2-256',
  'ssh-rsa',
];

/** Algorithms of the key types already on file first, as ssh does, so a known key is offered. */
function hostKeyAlgorithms(knownTypes: string[]): string[] {
  const preferred = HOST_KEY_ALGORITHMS.filter((a) =>
    knownTypes.includes(a.startsWith('rsa-sha2-') ? 'ssh-rsa' : a),
  );
  return [...preferred, ...HOST_KEY_ALGORITHMS.filter((a) => !preferred.includes(a))];
}

/**
 * Opens an SSH connection: host key checked before anything is sent, then the agent's keys and
 * each identity tried in turn. Rejects with an ImgctlError that says what went wrong (refused,
 * timed out, unknown or changed host key, authentication failed).
 */
export function connectSsh(options: ConnectOptions): Promise<RemoteShell> {
  const { target, knownHosts } = options;
  const where = formatSshTarget(target);
  const timeoutMs = options.connectTimeoutMs ?? 15_000;
  const auth: Array<AgentAuthMethod | PublicKeyAuthMethod> = [];
  if (options.agentSocket)
    auth.push({ type: 'agent', username: target.user, agent: options.agentSocket });
  for (const key of options.identities ?? [])
    auth.push({ type: 'publickey', username: target.user, key });
  if (auth.length === 0)
    return Promise.reject(
      new ImgctlError('USAGE', `no SSH key to log in to ${where} with`, {
        hint: 'start an ssh agent with your key (SSH_AUTH_SOCK), or give --identity FILE',
      }),
    );
  const knownTypes = knownHosts.check(target.host, target.port, Buffer.alloc(0)).knownTypes;

  return new Promise<RemoteShell>((resolve, reject) => {
    const conn = new SshClient();
    let refusal: ImgctlError | undefined;
    let settled = false;
    const fail = (error: ImgctlError) => {
      if (settled) return;
      settled = true;
      options.signal?.removeEventListener('abort', onAbort);
      conn.destroy();
      reject(error);
    };
    const onAbort = () => fail(new ImgctlError('FAILED', `connecting to ${where} was cancelled`));
    if (options.signal?.aborted) return onAbort();
    options.signal?.addEventListener('abort', onAbort, { once: true });

    conn.on('ready', () => {
      if (settled) return;
      settled = true;
      options.signal?.removeEventListener('abort', onAbort);
      resolve(remoteShell(conn, where, options.cancelGraceMs ?? 10_000));
    });
    conn.on('error', (error: Error & { level?: string; code?: string }) => {
      fail(refusal ?? connectError(where, timeoutMs, error, auth));
    });
    conn.on('close', () =>
      fail(refusal ?? new ImgctlError('FAILED', `${where} closed the connection`)),
    );
    conn.connect({
      host: target.host,
      port: target.port,
      username: target.user,
      authHandler: auth,
      readyTimeout: timeoutMs,
      keepaliveInterval: options.keepaliveIntervalMs ?? 15_000,
      keepaliveCountMax: 3,
      algorithms: { serverHostKey: hostKeyAlgorithms(knownTypes) as never },
      hostVerifier: (key: Buffer, verify: (ok: boolean) => void) => {
        const check = knownHosts.check(target.host, target.port, key);
        const type = blobKeyType(key) ?? 'unknown';
        if (check.status === 'known') return verify(true);
        if (check.status === 'unknown' && options.acceptNew) {
          knownHosts.accept(target.host, target.port, key).then(
            () => verify(true),
            (error: unknown) => {
              refusal = new ImgctlError(
                'FAILED',
                `cannot record the host key of ${where} in ${knownHosts.file}: ${String(error)}`,
              );
              verify(false);
            },
          );
          return;
        }
        refusal = hostKeyRefusal(where, target, check, type, key, knownHosts.file);
        verify(false);
      },
    });
  });
}

function hostKeyRefusal(
  where: string,
  target: SshTarget,
  check: HostKeyCheck,
  type: string,
  key: Buffer,
  file: string,
): ImgctlError {
  const print = fingerprint(key);
  if (check.status === 'revoked')
    return new ImgctlError('INTEGRITY', `the host key of ${where} is revoked (${type} ${print})`);
  if (check.status === 'changed')
    return new ImgctlError(
      'INTEGRITY',
      `the host key of ${where} has CHANGED: it presented ${type} ${print}, known_hosts holds another key (${check.conflicting.join(', ')}); someone may be intercepting the connection`,
      {
        hint: `if the host was reinstalled, check the new key out of band, then remove the old one: ssh-keygen -R '${knownHostName(target.host, target.port)}' -f ${file}`,
      },
    );
  return new ImgctlError(
    'FAILED',
    `the host key of ${where} is unknown (${type} ${print}) and was refused`,
    {
      hint: `check the fingerprint, then run again with --accept-new (it adds unknown keys to ${file}, never changed ones)`,
    },
  );
}

/** OpenSSH's fingerprint: SHA256: and the unpadded base64 of SHA-256 over the key blob. */
function fingerprint(key: Buffer): string {
  return `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}`;
}

function connectError(
  where: string,
  timeoutMs: number,
  error: Error & { level?: string; code?: string },
  auth: Array<AgentAuthMethod | PublicKeyAuthMethod>,
): ImgctlError {
  const code = error.code;
  if (error.level === 'client-authentication') {
    const tried = auth.map((a) => (a.type === 'agent' ? 'the ssh agent' : 'an identity file'));
    return new ImgctlError(
      'FAILED',
      `authentication to ${where} failed (tried ${[...new Set(tried)].join(' and ')})`,
      {
        hint: "put your public key in the target's ~/.ssh/authorized_keys, or give --identity FILE",
      },
    );
  }
  if (error.level === 'client-timeout' || /timed out/i.test(error.message))
    return new ImgctlError(
      'FAILED',
      `cannot connect to ${where}: no SSH handshake within ${Math.round(timeoutMs / 1000)} s`,
    );
  const reasons: Record<string, string> = {
    ECONNREFUSED: 'connection refused',
    ETIMEDOUT: 'connection timed out',
    EHOSTUNREACH: 'host unreachable',
    ENETUNREACH: 'network unreachable',
    ENOTFOUND: 'host name not found',
    EAI_AGAIN: 'host name lookup failed',
    ECONNRESET: 'connection reset',
  };
  return new ImgctlError(
    'FAILED',
    `cannot connect to ${where}: ${(code && reasons[code]) ?? error.message}`,
    { cause: error },
  );
}

function remoteShell(conn: Client, where: string, graceMs: number): RemoteShell {
  let closed = false;
  return {
    exec: (argv, options = {}) => execRemote(conn, where, argv, options, graceMs),
    close() {
      if (closed) return;
      closed = true;
      conn.end();
    },
  };
}

function execRemote(
  conn: Client,
  where: string,
  argv: readonly string[],
  options: ExecOptions,
  graceMs: number,
): Promise<ExecResult> {
  const secrets = options.secretEnv ?? [];
  const bad = secrets.find((s) => /[\r\n\0]/.test(s.value));
  if (bad !== undefined)
    return Promise.reject(
      new ImgctlError('USAGE', `${bad.name} must be one line without control characters`),
    );
  const command = shellCommand(argv, {
    secretEnv: secrets.map((s) => s.name),
    supervise: options.supervise,
  });
  if (options.supervise && options.stdin !== undefined)
    return Promise.reject(new Error('execRemote: stdin bytes and supervise exclude each other'));
  const stdin = secrets.map((s) => `${s.value}\n`).join('');
  const maxStdout = options.maxStdout ?? 16 << 20;
  return new Promise<ExecResult>((resolve, reject) => {
    conn.exec(command, (error, stream: ClientChannel) => {
      if (error) {
        reject(new ImgctlError('FAILED', `cannot run ${argv[0]} on ${where}: ${error.message}`));
        return;
      }
      const stdout: Buffer[] = [];
      let stdoutBytes = 0;
      let stderr = '';
      let partial = '';
      let exitCode: number | null = null;
      let exitSignal: string | undefined;
      let killTimer: NodeJS.Timeout | undefined;
      // supervised: EOF makes the remote watcher SIGTERM the command; closing the channel is
      // the last resort after the grace period
      const onAbort = () => {
        if (!options.supervise) return void stream.close();
        stream.end();
        killTimer = setTimeout(() => stream.close(), graceMs);
      };
      if (options.signal?.aborted) onAbort();
      else options.signal?.addEventListener('abort', onAbort, { once: true });

      stream.on('data', (chunk: Buffer) => {
        stdoutBytes += chunk.length;
        if (stdoutBytes <= maxStdout) stdout.push(chunk);
      });
      stream.stderr.setEncoding('utf8').on('data', (chunk: string) => {
        stderr += chunk;
        const lines = (partial + chunk).split('\n');
        partial = lines.pop()!;
        for (const line of lines) options.onStderrLine?.(line.replace(/\r$/, ''));
      });
      stream.on('exit', (code: number | null, signalName?: string) => {
        exitCode = code;
        exitSignal = signalName ?? undefined;
        // the command is done: release the supervisor's stdin watcher
        if (options.supervise) stream.end();
      });
      stream.on('close', () => {
        clearTimeout(killTimer);
        options.signal?.removeEventListener('abort', onAbort);
        if (partial !== '') options.onStderrLine?.(partial);
        if (stdoutBytes > maxStdout) {
          reject(
            new ImgctlError(
              'FAILED',
              `${argv[0]} on ${where} printed more than ${maxStdout} bytes`,
            ),
          );
          return;
        }
        resolve({
          exitCode,
          signal: exitSignal,
          stdout: Buffer.concat(stdout).toString('utf8'),
          stderr,
        });
      });
      if (options.supervise) stream.write(stdin);
      else if (options.stdin === undefined) stream.end(stdin);
      else {
        if (stdin !== '') stream.write(stdin);
        stream.end(options.stdin);
      }
    });
  });
}
