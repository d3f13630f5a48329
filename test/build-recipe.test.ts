import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { minimalImageYaml } from './helpers/base-store.ts';
import { hashTree, IMGCTL_BIN, makeStore, runCli } from './helpers/index.ts';

/**
 * An image whose build.sh does what its record's `mode` parameter says: ok, fail, nooutput,
 * block (waits on a fifo that never opens, to be killed), big (a 256 MiB system disk).
 */
const BUILD_SH = `#!/usr/bin/env bash
set -euo pipefail
echo "env IMAGE_NAME=$IMAGE_NAME RECORD=$RECORD PARAM_GREETING=$PARAM_GREETING PARAM_WORKERS=$PARAM_WORKERS"
echo "env cwd=$(pwd) OUT_DIR=$OUT_DIR"
echo "kickstart: $(grep '^network' "$KICKSTART")"
count=$(cat "$CACHE_DIR/runs" 2>/dev/null || echo 0)
echo $((count + 1)) >"$CACHE_DIR/runs"
echo "cache runs=$((count + 1))"
case "$PARAM_MODE" in
  fail) echo "something broke" >&2; exit 3 ;;
  block) truncate -s 1M "$OUT_DIR/root.raw"; echo "step: blocked"; mkfifo gate; read -r _ <gate ;;
  big) head -c 256M /dev/urandom >"$OUT_DIR/root.raw" ;;
  *) truncate -s 2M "$OUT_DIR/root.raw"; printf 'root of %s' "$PARAM_GREETING" | dd of="$OUT_DIR/root.raw" conv=notrunc status=none ;;
esac
[ "$PARAM_MODE" = nooutput ] || truncate -s 1M "$OUT_DIR/data.raw"
printf '{"tools":{"mytool":"1.2.3"},"inputs":{"base.tar":"%s"}}' "$(printf base | sha256sum | cut -d' ' -f1)" >"$OUT_DIR/build-info.json"
echo "step: done"
`;

const IMAGE_YAML = minimalImageYaml({
  name: 'app',
  disks: [
    { id: 'root', use: 'system' },
    { id: 'data', use: 'data' },
    { id: 'tmp', use: 'scratch' },
  ],
  extra: `parameters:
  greeting:
    default: hello
  workers:
    type: integer
    default: 2
  mode:
    default: ok
`,
});

const record = (name: string, mode: string) => `apiVersion: imgctl/v1
kind: ImageRecord
name: ${name}
image: app
# a comment that survives the build
description: builds in mode ${mode}
provision:
  parameters:
    mode: ${mode}
`;

async function makeBuildStore() {
  const store = await makeStore({
    'images/app/image.yaml': IMAGE_YAML,
    'images/app/build.sh': BUILD_SH,
    'images/app/kickstart.ks': 'network --hostname={{ HOSTNAME }}-{{ greeting }}\n',
    ...Object.fromEntries(
      ['ok', 'fail', 'nooutput', 'block', 'big'].map((mode) => [
        `images/app/records/${mode === 'ok' ? 'default' : mode}.yaml`,
        record(mode === 'ok' ? 'default' : mode, mode),
      ]),
    ),
  });
  return store.dir;
}

/** Everything of the store but .state (logs, caches and scratch directories live there). */
async function hashStore(dir: string): Promise<string> {
  const entries = (await readdir(dir, { withFileTypes: true })).filter((e) => e.name !== '.state');
  const parts = await Promise.all(
    entries.map(async (e) => {
      const path = join(dir, e.name);
      return `${e.name}:${e.isDirectory() ? await hashTree(path) : await readFile(path, 'utf8')}`;
    }),
  );
  return parts.sort().join('\n');
}

const build = (dir: string, ...args: string[]) => runCli(['--store', dir, 'build', 'app', ...args]);

describe('imgctl build: the recipe contract', () => {
  it('runs build.sh with the documented environment, adds the disks and writes build:', async () => {
    const dir = await makeBuildStore();
    const result = await build(dir);
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stderr).toMatch(
      /^build: env IMAGE_NAME=app RECORD=default PARAM_GREETING=hello PARAM_WORKERS=2$/m,
    );
    expect(result.stderr).toMatch(
      /^build: env cwd=(\S+)\/\.state\/build\/app-\d{8}T\d{6}Z-[0-9a-f]{6}\.\d+ OUT_DIR=\1\/\.state\/build\/app-\S+\/out$/m,
    );
    expect(result.stderr).toMatch(/^build: kickstart: network --hostname=app-hello$/m);
    // both disks are one change: one revision
    expect(result.stdout).toMatch(/^built image app \(record default\): revision 2 in /);

    const image = parse(await readFile(join(dir, 'images/app/image.yaml'), 'utf8'));
    expect(image.revision).toBe(2);
    expect(image.disks[0]).toMatchObject({ id: 'root', format: 'raw', size: '2MiB', blob: true });
    expect(image.disks[1]).toMatchObject({ id: 'data', size: '1MiB', blob: true });
    expect(image.disks[2]).toEqual({ id: 'tmp', use: 'scratch', format: 'raw', size: '1MiB' });

    const text = await readFile(join(dir, 'images/app/records/default.yaml'), 'utf8');
    expect(text).toContain('# a comment that survives the build');
    const { build: meta } = parse(text);
    expect(meta).toMatchObject({
      builder: 'imgctl build',
      revision: 2,
      tools: { mytool: '1.2.3' },
      disks: { root: image.disks[0].sha256, data: image.disks[1].sha256 },
    });
    expect(meta.tools['qemu-img']).toMatch(/^\d+\.\d+/);
    expect(Object.keys(meta.inputs).sort()).toEqual(['base.tar', 'build.sh', 'kickstart.ks']);
    expect(meta.inputs['build.sh']).toMatch(/^[0-9a-f]{64}$/);
    expect(meta.built_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);

    // the log stays, the scratch directory goes; the cache persists between builds
    const state = await readdir(join(dir, '.state/build'));
    expect(state).toEqual([expect.stringMatching(/^app-\d{8}T\d{6}Z-[0-9a-f]{6}\.log$/)]);
    expect(await readFile(join(dir, '.state/build', state[0]!), 'utf8')).toContain('step: done');
    const again = await build(dir, '--json');
    expect(again.exitCode, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ revision: 2 }); // same content: unchanged
    expect(await readFile(join(dir, '.state/cache/build/app/runs'), 'utf8')).toBe('2\n');
  });

  it('on failure leaves the store unchanged and names the log (exit 1)', async () => {
    const dir = await makeBuildStore();
    for (const [mode, message] of [
      ['fail', /build\.sh exited with status 3; the store is unchanged/],
      ['nooutput', /build\.sh succeeded but left no OUT_DIR\/data\.raw/],
    ] as const) {
      const before = await hashStore(dir);
      const result = await build(dir, '--record', mode);
      expect(result.exitCode).toBe(1);
      expect(result.stderr).toMatch(message);
      const log = /see the log: (\S+\.log)/.exec(result.stderr)?.[1];
      expect(log, result.stderr).toBeDefined();
      expect(await readFile(log!, 'utf8')).toContain('cache runs=');
      expect(await hashStore(dir)).toBe(before);
    }
    expect((await readdir(join(dir, '.state/build'))).every((n) => n.endsWith('.log'))).toBe(true);
  });

  it('--keep-scratch keeps OUT_DIR and the rendered kickstart', async () => {
    const dir = await makeBuildStore();
    const result = await build(dir, '--keep-scratch', '--record', 'nooutput');
    expect(result.exitCode).toBe(1);
    const scratch = (await readdir(join(dir, '.state/build'))).find((n) => !n.endsWith('.log'))!;
    expect(await readFile(join(dir, '.state/build', scratch, 'kickstart.ks'), 'utf8')).toBe(
      'network --hostname=app-hello\n',
    );
    expect(await readdir(join(dir, '.state/build', scratch, 'out'))).toContain('root.raw');
    // a later build does not clear a kept scratch directory away
    expect((await build(dir)).exitCode).toBe(0);
    expect(await readdir(join(dir, '.state/build'))).toContain(scratch);
  });

  it('refuses an image without build.sh (exit 4)', async () => {
    const dir = await makeBuildStore();
    expect((await runCli(['--store', dir, 'image', 'create', 'plain'])).exitCode).toBe(0);
    const result = await runCli(['--store', dir, 'build', 'plain']);
    expect(result.exitCode).toBe(4);
    expect(result.stderr).toContain("image 'plain' has no build recipe (images/plain/build.sh)");
  });
});

/** Starts the real imgctl as its own process group; `stderrUntil` resolves when a line matches. */
function startBuild(dir: string, record: string) {
  const child = execa(
    process.execPath,
    [IMGCTL_BIN, '--store', dir, 'build', 'app', '--record', record],
    {
      detached: true,
      reject: false,
      stdin: 'ignore',
    },
  );
  let stderr = '';
  const stderrUntil = (pattern: RegExp) =>
    new Promise<void>((done, fail) => {
      const check = () => pattern.test(stderr) && done();
      child.stderr!.on('data', (chunk: Buffer) => {
        stderr += String(chunk);
        check();
      });
      void child.then(() => fail(new Error(`imgctl ended before ${pattern}: ${stderr}`)));
    });
  return { child, stderrUntil, stderr: () => stderr };
}

/** SIGKILL to imgctl alone (what is tested), then to what is left of its group (cleanup). */
async function killBuild(child: ResultPromise): Promise<void> {
  process.kill(child.pid!, 'SIGKILL');
  await child;
  try {
    process.kill(-child.pid!, 'SIGKILL');
  } catch {
    // the group is gone already
  }
}

describe('imgctl build: killed midway', () => {
  it('SIGKILL while build.sh runs: the store is as before; the next build succeeds', async () => {
    const dir = await makeBuildStore();
    const before = await hashStore(dir);
    const { child, stderrUntil } = startBuild(dir, 'block');
    await stderrUntil(/^build: step: blocked$/m);
    await killBuild(child);
    expect(await hashStore(dir)).toBe(before);

    const rerun = await build(dir);
    expect(rerun.exitCode, rerun.stderr).toBe(0);
    // the killed build's scratch directory is cleared away by the next one
    expect((await readdir(join(dir, '.state/build'))).filter((n) => !n.endsWith('.log'))).toEqual(
      [],
    );
  });

  it('slow: SIGKILL while the disks are added (before, between and after them): the store is as before or complete', async () => {
    const files = ['images/app/image.yaml', 'images/app/records/big.yaml'];
    // Kill points: as the first disk starts, between the two disks, and at fractions of the
    // time from the second disk's line to the end (blobs placed, the transaction written).
    const points: Array<{ line: RegExp; after?: number }> = [
      { line: /^build: adding disk root/m },
      { line: /^build: adding disk data/m },
      { line: /^build: adding disk data/m, after: 5 },
      { line: /^build: adding disk data/m, after: 40 },
    ];
    const outcomes: string[] = [];
    let firstKillLate = false;
    for (const point of points) {
      const dir = await makeBuildStore();
      const read = () => Promise.all(files.map((f) => readFile(join(dir, f), 'utf8')));
      const before = await read();
      const { child, stderrUntil, stderr } = startBuild(dir, 'big');
      await stderrUntil(point.line);
      if (point.after) await new Promise((resolve) => setTimeout(resolve, point.after));
      await killBuild(child);
      // A kill that landed only after the second disk was started (a loaded machine) may find
      // the store complete even at the first point.
      if (outcomes.length === 0) firstKillLate = /^build: adding disk data/m.test(stderr());
      const after = await read();
      if (after[0] !== before[0] || after[1] !== before[1]) {
        // complete: both disks as the build made them, one revision, and build: naming them
        const image = parse(after[0]!);
        expect(image.revision).toBe(2);
        expect(image.disks[0]).toMatchObject({ size: '256MiB', blob: true });
        expect(image.disks[1]).toMatchObject({ size: '1MiB', blob: true });
        const meta = parse(after[1]!).build;
        expect(meta).toMatchObject({
          revision: 2,
          disks: { root: image.disks[0].sha256, data: image.disks[1].sha256 },
        });
        outcomes.push('complete');
      } else outcomes.push('before'); // at most orphan blobs, for verify --gc
      const rerun = await build(dir, '--record', 'big');
      expect(rerun.exitCode, rerun.stderr).toBe(0);
      expect(parse(await readFile(join(dir, files[0]!), 'utf8')).revision).toBe(2);
      const verify = await runCli(['--store', dir, 'verify', '--gc']);
      expect(verify.exitCode, verify.stderr + verify.stdout).toBe(0);
      expect(await readdir(join(dir, '.blobs/tmp'))).toEqual([]);
    }
    // the first point is before anything is named: it must have found the store as before
    if (firstKillLate) console.warn('build-recipe: the first kill landed late; its check skipped');
    else expect(outcomes[0]).toBe('before');
  }, 600_000);
});
