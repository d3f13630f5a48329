/**
 * dist/imgagent-linux-x64, the agent with Node inside (scripts/build.mjs), runs where no Node is:
 * in a mount namespace whose node binary is hidden behind /dev/null, it answers --version and
 * talks to a real `imgctl serve` (--list, --display).
 */
import { realpathSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, inject, it } from 'vitest';
import { copyExampleStore } from './helpers/index.ts';
import { startServer } from './helpers/server.ts';

/** The run's shared build (test/global-setup.ts). */
const executable = join(inject('distDir'), 'imgagent-linux-x64');

/** Runs the executable with ARGS where node cannot be run: its binary is /dev/null in there. */
function withoutNode(args: string[]) {
  const script = [
    'mount --bind /dev/null "$1"',
    'shift',
    'if node --version >/dev/null 2>&1; then echo "node still runs" >&2; exit 99; fi',
    'exec "$@"',
  ].join('\n');
  return execa(
    'unshare',
    ['-m', 'sh', '-c', script, 'sh', realpathSync(process.execPath), executable, ...args],
    { reject: false, env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' }, extendEnv: false },
  );
}

describe('the self-contained agent', () => {
  it('runs with no Node on the machine: --version and --help', async () => {
    const version = await withoutNode(['--version']);
    expect(version.exitCode, version.stderr).toBe(0);
    expect(version.stdout).toMatch(/^\d+\.\d+\.\d+$/);
    const help = await withoutNode(['--help']);
    expect(help.exitCode, help.stderr).toBe(0);
    expect(help.stdout).toMatch(/^Usage: imgagent/);
  });

  it('lists the images and shows a system plan from a real imgctl serve, without Node', async () => {
    const { dir: store } = await copyExampleStore();
    const server = await startServer({ storeDir: store });
    const list = await withoutNode(['--server', server.url, '--list', 'images', '--json']);
    expect(list.exitCode, list.stderr).toBe(0);
    const images = (JSON.parse(list.stdout) as Array<{ name: string }>).map((i) => i.name);
    expect(images).toEqual(expect.arrayContaining(['tiny-linux', 'web']));
    const display = await withoutNode([
      '--server',
      server.url,
      '--display',
      '--system',
      'tiny01',
      '--json',
    ]);
    expect(display.exitCode, display.stderr).toBe(0);
    expect(display.stdout).toContain('tiny-linux');
    const unreachable = await withoutNode(['--server', 'http://127.0.0.1:1', '--list', 'images']);
    expect(unreachable.exitCode).toBe(1);
    expect(unreachable.stderr).toContain('cannot reach the server');
  });
});
