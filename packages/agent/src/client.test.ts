import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { main } from './main.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'imgagent-client-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function agent(argv: string[]) {
  let stdout = '';
  let stderr = '';
  const exitCode = await main(argv, {
    stdout: { write: (s: string) => (stdout += s) },
    stderr: { write: (s: string) => (stderr += s) },
    env: {},
    cwd: dir,
  });
  return { exitCode, stdout, stderr };
}

describe('imgagent --token-file and --server', () => {
  it('reads a token file by the rule of imgctl serve, naming the file, never the token', async () => {
    await writeFile(join(dir, 'short'), 'SECRET-12\n');
    const short = await agent([
      '--server',
      'http://h',
      '--token-file',
      'short',
      '--list',
      'images',
    ]);
    expect(short.exitCode).toBe(3);
    expect(short.stderr).toContain(`token file ${join(dir, 'short')} holds 9 characters`);
    expect(short.stderr + short.stdout).not.toContain('SECRET');

    const missing = await agent([
      '--server',
      'http://h',
      '--token-file',
      'nope',
      '--list',
      'images',
    ]);
    expect(missing.exitCode).toBe(4);
    expect(missing.stderr).toContain(`token file ${join(dir, 'nope')} cannot be read (ENOENT)`);
  });

  it('takes only an http(s) server URL, its control characters escaped', async () => {
    const run = await agent(['--server', 'nope\x1b[2J', '--list', 'images']);
    expect(run.exitCode).toBe(2);
    expect(run.stderr).toContain("--server: not a URL: 'nope\\x1b[2J'");
    expect((await agent(['--server', 'ftp://h', '--list', 'images'])).exitCode).toBe(2);
  });
});
