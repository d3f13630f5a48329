import { createHash } from 'node:crypto';
import { chmod, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { makeStore } from '../../../../test/helpers/validate-documents.ts';
import { storePaths } from '../store/store.ts';
import { buildRamdisk, RAMDISK_FILE, readRamdisk, recipeHash } from './ramdisk.ts';
import { verifyStore } from './verify.ts';

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

/**
 * A recipe standing in for the real one (image-store/ramdisk/build.sh, which the e2e test
 * runs): it writes what $KERNEL, $INITRD and $CMDLINE say (a variable unset: no such file),
 * and records the environment it got.
 */
const RECIPE = `#!/bin/sh
set -eu
[ -z "\${KERNEL+x}" ] || printf '%s' "$KERNEL" >"$OUT_DIR/vmlinuz"
[ -z "\${INITRD+x}" ] || printf '%s' "$INITRD" >"$OUT_DIR/initrd.img"
[ -z "\${CMDLINE+x}" ] || printf '%s\\n' "$CMDLINE" >"$OUT_DIR/cmdline"
[ -z "\${FAIL+x}" ] || exit 3
printf '{"tools":{"kernel":"test 1"},"inputs":{"imgagent":"%s"}}' "$(sha256sum "$IMGCTL_AGENT_EXECUTABLE" | cut -c1-64)" >"$OUT_DIR/build-info.json"
echo "agent=$IMGCTL_AGENT_EXECUTABLE store=$IMAGE_STORE cache=$CACHE_DIR"
`;

async function recipeStore(): Promise<{ store: string; agent: string }> {
  const store = await makeStore({ 'ramdisk/build.sh': RECIPE, 'ramdisk/init': '#!/bin/sh\n' });
  await chmod(join(store, 'ramdisk/build.sh'), 0o755);
  const agent = join(store, 'imgagent-linux-x64');
  await writeFile(agent, 'the agent');
  return { store, agent };
}

/** buildRamdisk with the recipe's outputs set through the environment of this process. */
async function build(
  store: string,
  agent: string,
  outputs: Record<string, string>,
  lines: string[] = [],
) {
  const saved = { ...process.env };
  Object.assign(process.env, outputs);
  try {
    return await buildRamdisk(
      store,
      { agentExecutable: agent, cacheDir: join(store, '.state/cache') },
      { onLine: (line) => lines.push(line), onStep: (line) => lines.push(line) },
    );
  } finally {
    for (const key of Object.keys(outputs)) delete process.env[key];
    Object.assign(process.env, saved);
  }
}

describe('buildRamdisk', () => {
  it('stores the kernel and initramfs as blobs and writes a valid ramdisk.yaml', async () => {
    const { store, agent } = await recipeStore();
    const lines: string[] = [];
    const result = await build(
      store,
      agent,
      { KERNEL: 'kernel bytes', INITRD: 'initrd bytes', CMDLINE: 'console=ttyS0,115200' },
      lines,
    );
    expect(result.changed).toBe(true);
    const doc = await readRamdisk(store);
    expect(doc).toEqual(result.ramdisk);
    expect(doc.kernel).toEqual({ sha256: sha256('kernel bytes'), size: 12 });
    expect(doc.initrd).toEqual({ sha256: sha256('initrd bytes'), size: 12 });
    expect(doc.cmdline).toBe('console=ttyS0,115200');
    expect(doc.built.tools).toEqual({ kernel: 'test 1' });
    expect(doc.built.inputs).toEqual({ imgagent: sha256('the agent') });
    expect(doc.built.recipe_sha256).toBe(await recipeHash(join(store, 'ramdisk')));
    expect(await readFile(storePaths.blobFile(store, doc.initrd.sha256), 'utf8')).toBe(
      'initrd bytes',
    );
    expect(lines).toContain(`agent=${agent} store=${store} cache=${join(store, '.state/cache')}`);
    // the scratch directory is gone, the log stays
    expect(await readdir(join(store, '.state/build'))).toEqual([
      expect.stringMatching(/^ramdisk-\d{8}T\d{6}Z-[0-9a-f]{6}\.log$/),
    ]);
  });

  it('leaves ramdisk.yaml as it is when a rebuild gives the same bytes, and rewrites it when not', async () => {
    const { store, agent } = await recipeStore();
    const outputs = { KERNEL: 'k', INITRD: 'i', CMDLINE: 'console=ttyS0' };
    await build(store, agent, outputs);
    const file = join(store, RAMDISK_FILE);
    const [text, mtime] = [await readFile(file, 'utf8'), (await stat(file)).mtimeMs];
    expect((await build(store, agent, outputs)).changed).toBe(false);
    expect(await readFile(file, 'utf8')).toBe(text);
    expect((await stat(file)).mtimeMs).toBe(mtime);
    const next = await build(store, agent, { ...outputs, INITRD: 'i2' });
    expect(next.changed).toBe(true);
    expect((await readRamdisk(store)).initrd.sha256).toBe(sha256('i2'));
  });

  it('changes nothing when the recipe fails or leaves too little, and says what', async () => {
    const { store, agent } = await recipeStore();
    await expect(build(store, agent, { KERNEL: 'k', INITRD: 'i', FAIL: '1' })).rejects.toThrow(
      'build.sh exited with status 3; the store is unchanged',
    );
    await expect(build(store, agent, { KERNEL: 'k' })).rejects.toThrow(
      'build.sh succeeded but left no OUT_DIR/initrd.img; the store is unchanged',
    );
    await expect(build(store, agent, { KERNEL: 'k', INITRD: '' })).rejects.toThrow(
      'left an empty or special OUT_DIR/initrd.img',
    );
    await expect(
      build(store, agent, { KERNEL: 'k', INITRD: 'i', CMDLINE: 'console=ttyS0\u00e9' }),
    ).rejects.toThrow('OUT_DIR/cmdline must be one line of printable ASCII');
    await expect(readRamdisk(store)).rejects.toThrow(`${RAMDISK_FILE} does not exist`);
    expect(await readdir(join(store, '.blobs/sha256')).catch(() => [])).toEqual([]);
  });

  it('needs a recipe and the agent', async () => {
    const { store, agent } = await recipeStore();
    await expect(
      buildRamdisk(store, { agentExecutable: join(store, 'nope') }),
    ).rejects.toMatchObject({ code: 'NOT_FOUND', message: expect.stringContaining('nope') });
    const bare = await makeStore({});
    await expect(buildRamdisk(bare, { agentExecutable: agent })).rejects.toMatchObject({
      code: 'NOT_FOUND',
      message: 'the store has no ramdisk recipe (ramdisk/build.sh)',
    });
  });

  it('keeps its blobs through imgctl verify --gc', async () => {
    const { store, agent } = await recipeStore();
    await build(store, agent, { KERNEL: 'kept kernel', INITRD: 'kept initrd' });
    const result = await verifyStore(store, { gc: true });
    expect(result.removed).toEqual([]);
    const doc = await readRamdisk(store);
    expect(doc.cmdline).toBe('');
    for (const blob of [doc.kernel, doc.initrd])
      expect((await stat(storePaths.blobFile(store, blob.sha256))).size).toBe(blob.size);
  });
});

describe('recipeHash', () => {
  it('is what sha256sum gives over the sorted file list, ramdisk.yaml left out', async () => {
    const store = await makeStore({
      'ramdisk/build.sh': 'a',
      'ramdisk/init': 'b',
      'ramdisk/Z': 'c',
      'ramdisk/sub/x': 'd',
      'ramdisk/ramdisk.yaml': 'not part of the recipe',
    });
    const { stdout } = await execa(
      'sh',
      ['-c', 'find . -type f ! -name ramdisk.yaml | LC_ALL=C sort | xargs sha256sum | sha256sum'],
      { cwd: join(store, 'ramdisk') },
    );
    expect(await recipeHash(join(store, 'ramdisk'))).toBe(stdout.slice(0, 64));
  });
});
