/**
 * A real OpenSSH sshd on 127.0.0.1 for e2e tests and benches: its own host key, a client key
 * in its authorized_keys, a config in a temp dir, run as `/usr/sbin/sshd -D -e -f CONFIG`
 * (root logs in with the client key). Free of vitest so the benches use it too; the caller
 * stops it.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';

export interface StartSshdOptions {
  /** the client key pair to authorize (default: a new ed25519 one in the sshd's dir) */
  clientKey?: string;
  /** environment of every session, e.g. { PATH: '/opt/old-node/bin:/usr/bin:/bin' } */
  sessionEnv?: Record<string, string>;
}

export interface TestSshd {
  host: '127.0.0.1';
  port: number;
  /** `root@127.0.0.1:PORT` */
  target: string;
  dir: string;
  /** the authorized client private key (its public key is `${clientKey}.pub`) */
  clientKey: string;
  /** the known_hosts line of this sshd: `[127.0.0.1]:PORT ssh-ed25519 AAAA…` */
  knownHostsLine: string;
  /** everything sshd logged so far */
  log(): string;
  /** SIGTERM, then waits for sshd to exit and removes its dir; safe to call twice */
  stop(): Promise<void>;
}

/** Makes an unencrypted ed25519 key pair at `file` and `file.pub`. */
export async function makeSshKey(file: string): Promise<string> {
  await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'imgctl-test', '-f', file]);
  return file;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export async function startSshd(options: StartSshdOptions = {}): Promise<TestSshd> {
  // sshd's privilege separation needs this directory (systemd normally makes it).
  await mkdir('/run/sshd', { recursive: true, mode: 0o755 });
  const dir = await mkdtemp(join(tmpdir(), 'imgctl-sshd-'));
  const hostKey = await makeSshKey(join(dir, 'host_ed25519'));
  const clientKey = options.clientKey ?? (await makeSshKey(join(dir, 'client_ed25519')));
  await writeFile(join(dir, 'authorized_keys'), await readFile(`${clientKey}.pub`), {
    mode: 0o600,
  });
  const hostPub = (await readFile(`${hostKey}.pub`, 'utf8')).trim().split(/\s+/);
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const config = join(dir, 'sshd_config');
    await writeFile(
      config,
      [
        `Port ${port}`,
        'ListenAddress 127.0.0.1',
        `HostKey ${hostKey}`,
        `PidFile ${join(dir, 'sshd.pid')}`,
        `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
        'PubkeyAuthentication yes',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'PermitRootLogin prohibit-password',
        'UsePAM no',
        // the temp dir's parents (/tmp) are world-writable
        'StrictModes no',
        'Subsystem sftp internal-sftp',
        'MaxStartups 200',
        'MaxSessions 50',
        'LogLevel VERBOSE',
        ...Object.entries(options.sessionEnv ?? {}).map(([k, v]) => `SetEnv ${k}=${v}`),
        '',
      ].join('\n'),
    );
    const proc: ChildProcess = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', config], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let log = '';
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    const listening = await new Promise<boolean>((resolve) => {
      proc.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
        log += chunk;
        if (log.includes(`Server listening on 127.0.0.1 port ${port}`)) resolve(true);
      });
      proc.once('exit', () => resolve(false));
    });
    if (!listening) {
      if (attempt < 3 && /Address already in use/.test(log)) continue;
      await rm(dir, { recursive: true, force: true });
      throw new Error(`sshd did not start:\n${log}`);
    }
    let stopped = false;
    return {
      host: '127.0.0.1',
      port,
      target: `root@127.0.0.1:${port}`,
      dir,
      clientKey,
      knownHostsLine: `[127.0.0.1]:${port} ${hostPub[0]} ${hostPub[1]}`,
      log: () => log,
      async stop() {
        if (!stopped) {
          stopped = true;
          if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
          await exited;
        }
        await rm(dir, { recursive: true, force: true });
      },
    };
  }
}
