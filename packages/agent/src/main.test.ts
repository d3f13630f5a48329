import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { setsFromEnv } from './flags.ts';
import { main } from './main.ts';

async function agent(argv: string[]) {
  let stdout = '';
  let stderr = '';
  const exitCode = await main(argv, {
    stdout: { write: (s: string) => (stdout += s) },
    stderr: { write: (s: string) => (stderr += s) },
    env: {},
    cwd: '/',
  });
  return { exitCode, stdout, stderr };
}

describe('imgagent', () => {
  it('--help names the koan-style flags and exits 0', async () => {
    const run = await agent(['--help']);
    expect(run.exitCode).toBe(0);
    for (const flag of [
      '--server',
      '--list',
      '--display',
      '--virt',
      '--virt-name',
      '--virt-path',
      '--virt-type',
      '--connect',
      '--virt-bridge',
      '--nogfx',
      '--no-start',
      '--autostart',
      '--dry-run',
      '--print-xml',
      '--trust',
      '--cache-dir',
      '--force',
    ])
      expect(run.stdout).toContain(flag);
  });

  it('needs exactly one action (exit 2)', async () => {
    expect((await agent(['--server', 'http://127.0.0.1:1'])).stderr).toMatch(
      /error\[USAGE\]: nothing to do: give one of --list, --display, --virt, --replace-self, --update, --rollback/,
    );
    const both = await agent(['--server', 'http://127.0.0.1:1', '--virt', '--display']);
    expect(both.exitCode).toBe(2);
    expect(both.stderr).toMatch(
      /give only one of --list, --display, --virt, --replace-self, --update, --rollback \(got --display, --virt\)/,
    );
  });

  it('refuses bad input before contacting anything (exit 2), as JSON with --json', async () => {
    expect((await agent(['--virt', '--image', 'x'])).stderr).toMatch(
      /no server: give --server URL/,
    );
    expect((await agent(['--server', 'ftp://h', '--virt', '--image', 'x'])).exitCode).toBe(2);
    expect((await agent(['--server', 'http://h', '--virt', '--image', '../etc'])).stderr).toMatch(
      /--image: invalid image name/,
    );
    const json = await agent(['--server', 'http://h', '--list', 'disks', '--json']);
    expect(json.exitCode).toBe(2);
    expect(JSON.parse(json.stdout)).toMatchObject({ error: { code: 'USAGE' } });
    expect(
      (await agent(['--server', 'http://h', '--virt', '--virt-type', 'xen', '--image', 'x']))
        .exitCode,
    ).toBe(2);
  });

  it('with --json, reports a usage error commander finds as JSON on stdout too (exit 2)', async () => {
    for (const argv of [
      ['--bogus', '--json'],
      ['--json', '--virt', '--virt-type', 'xen', '--image', 'x'],
      ['--json', '--image'],
    ]) {
      const run = await agent(argv);
      expect(run.exitCode).toBe(2);
      expect(JSON.parse(run.stdout)).toMatchObject({
        error: { code: 'USAGE', hint: 'imgagent --help' },
      });
      expect(run.stderr).toMatch(/^error: /);
    }
    const plain = await agent(['--bogus']);
    expect(plain).toMatchObject({ exitCode: 2, stdout: '' });
    expect(plain.stderr).toBe("error: unknown option '--bogus'\n");
  });

  it('never echoes a token', async () => {
    const run = await agent([
      '--server',
      'http://h',
      '--token',
      'SECRET-TOKEN-1234',
      '--token-file',
      '/nope',
      '--virt',
      '--image',
      'x',
    ]);
    expect(run.exitCode).toBe(2);
    expect(run.stderr + run.stdout).not.toContain('SECRET-TOKEN-1234');
  });

  it('takes --set values from $IMGAGENT_SETS (a JSON array), as imgctl provision sends them', () => {
    expect(setsFromEnv(undefined)).toEqual([]);
    expect(setsFromEnv('["a=1","db_password=x y"]')).toEqual(['a=1', 'db_password=x y']);
    for (const bad of ['a=1', '{"a":1}', '[1]'])
      expect(() => setsFromEnv(bad)).toThrowError(/IMGAGENT_SETS must be a JSON array/);
  });
});

describe('imgagent --token-file and --server', () => {
  it('reads a token file by the rule of imgctl serve, naming the file, never the token', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'imgagent-token-'));
    onTestFinished(() => rm(dir, { recursive: true, force: true }));
    const short = join(dir, 'short');
    await writeFile(short, 'SECRET-12\n');
    const run = await agent(['--server', 'http://h', '--token-file', short, '--list', 'images']);
    expect(run.exitCode).toBe(2);
    expect(run.stderr).toContain(`--token-file ${short} holds 9 characters`);
    expect(run.stderr + run.stdout).not.toContain('SECRET');

    const nope = join(dir, 'nope');
    const missing = await agent(['--server', 'http://h', '--token-file', nope, '--list', 'images']);
    expect(missing.exitCode).toBe(4);
    expect(missing.stderr).toContain(`--token-file ${nope} cannot be read (ENOENT)`);
  });

  it('takes only an http(s) server URL, its control characters escaped', async () => {
    const run = await agent(['--server', 'nope\x1b[2J', '--list', 'images']);
    expect(run.exitCode).toBe(2);
    expect(run.stderr).toContain("--server: not a URL: 'nope\\x1b[2J'");
    expect((await agent(['--server', 'ftp://h', '--list', 'images'])).exitCode).toBe(2);
  });
});
