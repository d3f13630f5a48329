/**
 * `imgctl … | head -1`: a reader that goes away is not an error. Each binary, run as a user runs
 * it, has its stdout closed after the first line; it ends quietly with the exit code it would
 * have had (no 'write EPIPE' stack).
 */
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AGENT_BIN } from './helpers/agent-rig.ts';
import { copyExampleStore, IMGCTL_BIN } from './helpers/index.ts';
import { startServer } from './helpers/server.ts';

interface HeadRun {
  firstLine: string;
  exitCode: number | null;
  stderr: string;
}

/** Runs `bin ARGS | head -1`: stdout is closed as soon as its first line has come. */
function pipeToHead(bin: string, args: string[]): Promise<HeadRun> {
  const child = spawn(process.execPath, [bin, ...args], {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, LANG: 'C' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
    if (stdout.includes('\n')) child.stdout.destroy();
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  return new Promise((resolve) => {
    child.on('close', (exitCode) =>
      resolve({ firstLine: stdout.split('\n')[0]!, exitCode, stderr }),
    );
  });
}

function expectQuiet(run: HeadRun, exitCode = 0): void {
  expect(run.stderr).not.toMatch(/EPIPE|Unhandled 'error' event|internal error/);
  expect(run.exitCode, run.stderr).toBe(exitCode);
}

describe('a closed pipe on stdout', () => {
  it('imgctl --help | head -1: the usage line, exit 0, nothing on stderr', async () => {
    const run = await pipeToHead(IMGCTL_BIN, ['--help']);
    expect(run.firstLine).toMatch(/^Usage: imgctl/);
    expectQuiet(run);
    expect(run.stderr).toBe('');
  });

  it('a --json command and a long listing end quietly, an error keeps its exit code', async () => {
    const { dir: store } = await copyExampleStore();
    const systems = Array.from({ length: 3000 }, (_, i) => `sys${i}`);
    await Promise.all(
      systems.map((name) =>
        writeFile(
          join(store, 'systems', `${name}.yaml`),
          `apiVersion: imgctl/v1\nkind: System\nname: ${name}\nimage: tiny-linux\n`,
        ),
      ),
    );
    const json = await pipeToHead(IMGCTL_BIN, ['system', 'list', '--json', '--store', store]);
    expect(json.firstLine).toBe('[');
    expectQuiet(json);
    const table = await pipeToHead(IMGCTL_BIN, ['system', 'list', '--store', store]);
    expect(table.firstLine).toMatch(/^SYSTEM\s/);
    expectQuiet(table);
    const failed = await pipeToHead(IMGCTL_BIN, [
      'image',
      'show',
      'nosuch',
      '--json',
      '--store',
      store,
    ]);
    expectQuiet(failed, 4);
  });

  it('imgagent --help and imgagent --list --json | head -1 end quietly', async () => {
    const help = await pipeToHead(AGENT_BIN, ['--help']);
    expect(help.firstLine).toMatch(/^Usage: imgagent/);
    expectQuiet(help);
    expect(help.stderr).toBe('');

    const { dir: store } = await copyExampleStore();
    const server = await startServer({ storeDir: store });
    const list = await pipeToHead(AGENT_BIN, [
      '--server',
      server.url,
      '--list',
      'systems',
      '--json',
    ]);
    expect(list.firstLine).toBe('[');
    expectQuiet(list);
  });
});
