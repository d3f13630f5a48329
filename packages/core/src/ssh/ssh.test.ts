import { createHmac, randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import {
  blobKeyType,
  checkHostKey,
  formatSshTarget,
  hostFieldMatches,
  knownHostsLine,
  parseKnownHosts,
  parseSshAddress,
  quoteShellArg,
  shellCommand,
} from './ssh.ts';

const run = promisify(execFile);

/** An SSH public key blob of `type` with random key material. */
function blob(type: string): Buffer {
  const name = Buffer.from(type);
  const length = Buffer.alloc(4);
  length.writeUInt32BE(name.length);
  return Buffer.concat([length, name, randomBytes(32)]);
}

const HOSTILE = [
  '',
  ' ',
  "'",
  "''",
  "'\\''",
  '"',
  '\\',
  '\\\\n',
  '$(touch /tmp/imgctl-pwned)',
  '`touch /tmp/imgctl-pwned`',
  '${HOME}',
  '$HOME',
  '; rm -rf / #',
  '&& echo no',
  '| cat',
  '> /tmp/imgctl-pwned',
  '*',
  '~',
  '~root',
  '!!',
  '-n',
  '--help',
  'a\nb',
  'tab\there',
  '\r\n',
  'ünïcødé ✓',
  '%s%n',
  '=cmd',
  'it\'s a "quote" $(x) `y` \\z',
];

describe('quoteShellArg / shellCommand', () => {
  it.each(['sh', 'bash', 'dash'])(
    '%s gets back every hostile argument byte for byte, nothing run',
    async (shell) => {
      const { stdout } = await run(shell, ['-c', `printf '%s\\0' ${shellCommand(HOSTILE)}`]);
      expect(stdout.split('\0').slice(0, -1)).toEqual(HOSTILE);
    },
  );

  it('always single-quotes, a quote as the four characters quote-backslash-quote-quote', () => {
    expect(quoteShellArg('plain')).toBe("'plain'");
    expect(quoteShellArg("it's")).toBe("'it'\\''s'");
    expect(quoteShellArg('')).toBe("''");
  });

  it('refuses a NUL byte, which no argument can carry', () => {
    expect(() => quoteShellArg('a\0b')).toThrow(/NUL/);
  });

  it('reads secrets from the first stdin lines into the environment, never the command line', async () => {
    const command = shellCommand(['sh', '-c', 'printf %s/%s "$SECRET_X" "$SECRET_Y"'], {
      secretEnv: ['SECRET_X', 'SECRET_Y'],
    });
    expect(command).not.toContain('s3cr3t');
    const child = execFile('sh', ['-c', command]);
    child.stdin!.end('s3cr3t \'with\' $(spaces)\n["b=2"]\n');
    let out = '';
    child.stdout!.on('data', (c: Buffer) => (out += String(c)));
    await new Promise((resolve) => child.on('close', resolve));
    expect(out).toBe('s3cr3t \'with\' $(spaces)/["b=2"]');
  });

  it('supervised: the command keeps its exit status, and the end of stdin stops it with SIGTERM', async () => {
    const runSupervised = (script: string, endStdinAfter?: string) =>
      new Promise<{ code: number | null; stderr: string; ms: number }>((resolve) => {
        const start = Date.now();
        const child = execFile('sh', [
          '-c',
          shellCommand(['sh', '-c', script], { supervise: true }),
        ]);
        let stderr = '';
        child.stderr!.on('data', (c: Buffer) => {
          stderr += String(c);
          if (endStdinAfter && stderr.includes(endStdinAfter)) child.stdin!.end();
        });
        child.on('close', (code) => resolve({ code, stderr, ms: Date.now() - start }));
      });
    expect((await runSupervised('exit 3')).code).toBe(3);
    const stopped = await runSupervised(
      'trap "echo got-term >&2; exit 7" TERM; echo started >&2; sleep 30 >/dev/null 2>&1 & wait',
      'started',
    );
    expect(stopped).toMatchObject({ code: 7, stderr: 'started\ngot-term\n' });
    expect(stopped.ms).toBeLessThan(10_000);
  });

  it('refuses a variable name that is not one', () => {
    expect(() => shellCommand(['true'], { secretEnv: ['OK', 'X; rm -rf /'] })).toThrow(
      /bad variable name/,
    );
  });
});

describe('parseSshAddress', () => {
  it.each([
    ['hv1', { user: 'root', host: 'hv1', port: 22 }],
    ['admin@hv1.example.com', { user: 'admin', host: 'hv1.example.com', port: 22 }],
    ['root@192.0.2.10:2222', { user: 'root', host: '192.0.2.10', port: 2222 }],
    ['[2001:db8::1]:2200', { user: 'root', host: '2001:db8::1', port: 2200 }],
    ['u@[::1]', { user: 'u', host: '::1', port: 22 }],
  ])('%s', (spec, expected) => {
    expect(parseSshAddress(spec, 'root')).toEqual(expected);
  });

  it.each([
    'root@',
    '@host',
    'Root@host',
    'host:99999',
    'host:0',
    'host:ssh',
    '2001:db8::1',
    '-oProxyCommand=touch x',
    'host name',
    'a@b@c',
    '[not-v6]:22',
    'host;id',
  ])('refuses %j', (spec) => {
    expect(() => parseSshAddress(spec, 'root')).toThrow(/not an SSH target/);
  });

  it('formats a target back, the port only when it is not 22', () => {
    expect(formatSshTarget({ user: 'root', host: 'hv1', port: 22 })).toBe('root@hv1');
    expect(formatSshTarget({ user: 'root', host: '::1', port: 2222 })).toBe('root@[::1]:2222');
  });
});

describe('known_hosts', () => {
  const ed = blob('ssh-ed25519');
  const ed2 = blob('ssh-ed25519');
  const rsa = blob('ssh-rsa');
  const b64 = (b: Buffer) => b.toString('base64');
  const hashed = (name: string) => {
    const salt = randomBytes(20);
    const hash = createHmac('sha1', salt).update(name).digest('base64');
    return `|1|${salt.toString('base64')}|${hash}`;
  };

  it('matches plain, [host]:port, wildcard, negated and hashed host fields', () => {
    expect(hostFieldMatches('hv1,hv2', 'hv2')).toBe(true);
    expect(hostFieldMatches('HV1', 'hv1')).toBe(true);
    expect(hostFieldMatches('hv1', '[hv1]:2222')).toBe(false);
    expect(hostFieldMatches('[hv1]:2222', '[hv1]:2222')).toBe(true);
    expect(hostFieldMatches('*.example.com,!bad.example.com', 'hv1.example.com')).toBe(true);
    expect(hostFieldMatches('*.example.com,!bad.example.com', 'bad.example.com')).toBe(false);
    expect(hostFieldMatches('hv?', 'hv7')).toBe(true);
    expect(hostFieldMatches('hv.', 'hvx')).toBe(false);
    expect(hostFieldMatches(hashed('[127.0.0.1]:2200'), '[127.0.0.1]:2200')).toBe(true);
    expect(hostFieldMatches(hashed('[127.0.0.1]:2200'), '[127.0.0.1]:2201')).toBe(false);
  });

  it('checks a presented key: known, unknown, changed (any other key of the host), revoked', () => {
    const entries = parseKnownHosts(
      [
        '# comment',
        `hv1,hv1.example.com ssh-ed25519 ${b64(ed)} admin@x`,
        `${hashed('[hv2]:2222')} ssh-rsa ${b64(rsa)}`,
        `@revoked * ssh-ed25519 ${b64(ed2)}`,
        '@cert-authority *.example.com ssh-ed25519 AAAA',
        'garbage line',
        `hv9 ssh-rsa ${b64(ed)}`,
      ].join('\n'),
      'kh',
    );
    // the mislabelled hv9 line and the malformed ones are skipped
    expect(entries.map((e) => e.source)).toEqual(['kh:2', 'kh:3', 'kh:4']);
    expect(checkHostKey(entries, 'hv1', 22, ed).status).toBe('known');
    expect(checkHostKey(entries, 'HV1.example.com', 22, ed).status).toBe('known');
    expect(checkHostKey(entries, 'hv2', 2222, rsa).status).toBe('known');
    expect(checkHostKey(entries, 'hv3', 22, ed).status).toBe('unknown');
    expect(checkHostKey(entries, 'hv1', 2222, ed).status).toBe('unknown');
    const changed = checkHostKey(entries, 'hv1', 22, blob('ssh-ed25519'));
    expect(changed).toMatchObject({ status: 'changed', conflicting: ['kh:2'] });
    // a key of another type for a host known by ed25519 is a change too
    expect(checkHostKey(entries, 'hv1', 22, blob('ecdsa-sha2-nistp256')).status).toBe('changed');
    expect(checkHostKey(entries, 'hv1', 22, ed2).status).toBe('revoked');
    expect(checkHostKey(entries, 'hv2', 2222, Buffer.alloc(0)).knownTypes).toEqual(['ssh-rsa']);
  });

  it('writes the line accept-new appends, which reads back as known', () => {
    const line = knownHostsLine('127.0.0.1', 2200, ed);
    expect(line).toBe(`[127.0.0.1]:2200 ssh-ed25519 ${b64(ed)}\n`);
    expect(checkHostKey(parseKnownHosts(line), '127.0.0.1', 2200, ed).status).toBe('known');
    expect(blobKeyType(ed)).toBe('ssh-ed25519');
    expect(blobKeyType(Buffer.from([0, 0, 0, 99]))).toBeUndefined();
  });
});
