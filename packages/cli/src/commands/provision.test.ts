import { mkdir, mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { locateAgentBundle, locateAgentExecutable } from './provision.ts';

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'imgctl-bundle-'));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Writes `file` under the temp root, modified at `seconds` (since the epoch). */
async function put(file: string, seconds: number): Promise<string> {
  const path = join(root, file);
  await mkdir(join(path, '..'), { recursive: true });
  await writeFile(path, '');
  await utimes(path, seconds, seconds);
  return path;
}

const io = { env: {}, cwd: '/' };

describe('locateAgentBundle', () => {
  it('from a checkout: dist/imgagent.mjs when it is as new as the sources, else NOT_FOUND: run npm run build', async () => {
    const here = join(root, 'packages/cli/src/commands');
    await put('packages/core/src/store/store.ts', 1000);
    await put('packages/agent/src/main.ts', 2000);
    await expect(locateAgentBundle(io, here)).rejects.toMatchObject({
      code: 'NOT_FOUND',
      message: `the agent bundle ${join(root, 'dist/imgagent.mjs')} is missing`,
      hint: expect.stringContaining('npm run build') as unknown,
    });

    const built = await put('dist/imgagent.mjs', 1500);
    await expect(locateAgentBundle(io, here)).rejects.toMatchObject({
      code: 'NOT_FOUND',
      message: expect.stringMatching(/imgagent\.mjs is older than the sources/) as unknown,
      hint: expect.stringContaining('npm run build') as unknown,
    });

    await utimes(built, 2000, 2000);
    // A test edited later does not change the bundle.
    await put('packages/agent/src/main.test.ts', 3000);
    expect(await locateAgentBundle(io, here)).toBe(built);
  });

  it('from a bundle: imgagent.mjs beside it; $IMGCTL_AGENT_BUNDLE first', async () => {
    const here = join(root, 'dist');
    await expect(locateAgentBundle(io, here)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    const beside = await put('dist/imgagent.mjs', 1000);
    expect(await locateAgentBundle(io, here)).toBe(beside);

    const other = await put('elsewhere/agent.mjs', 1000);
    const env = { IMGCTL_AGENT_BUNDLE: 'elsewhere/agent.mjs' };
    expect(await locateAgentBundle({ env, cwd: root }, here)).toBe(other);
    await expect(
      locateAgentBundle({ env: { IMGCTL_AGENT_BUNDLE: 'nope.mjs' }, cwd: root }, here),
    ).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });
});

describe('locateAgentExecutable', () => {
  it('imgagent-linux-x64 beside the bundle; from a checkout not when older than the sources', async () => {
    const here = join(root, 'packages/cli/src/commands');
    await put('packages/core/src/store/store.ts', 1000);
    await put('packages/agent/src/main.ts', 2000);
    const bundle = await put('dist/imgagent.mjs', 2000);
    const file = join(root, 'dist/imgagent-linux-x64');
    expect(await locateAgentExecutable(io, bundle, here)).toEqual({
      missing: `${file} is missing`,
      hint: expect.stringContaining('npm run build') as unknown,
    });
    await put('dist/imgagent-linux-x64', 1000);
    expect(await locateAgentExecutable(io, bundle, here)).toMatchObject({
      missing: `${file} is older than the sources`,
    });
    await utimes(file, 3000, 3000);
    expect(await locateAgentExecutable(io, bundle, here)).toEqual({ path: file });
    // beside an installed bundle, its age is not checked against a checkout
    const installed = await put('usr/lib/imgctl/imgagent.mjs', 1000);
    const exe = await put('usr/lib/imgctl/imgagent-linux-x64', 1000);
    expect(await locateAgentExecutable(io, installed, join(root, 'usr/lib/imgctl'))).toEqual({
      path: exe,
    });
  });

  it('$IMGCTL_AGENT_EXECUTABLE first: a file, else NOT_FOUND', async () => {
    const other = await put('elsewhere/agent', 1000);
    const env = { IMGCTL_AGENT_EXECUTABLE: 'elsewhere/agent' };
    expect(await locateAgentExecutable({ env, cwd: root }, '/x/imgagent.mjs')).toEqual({
      path: other,
    });
    await expect(
      locateAgentExecutable({ env: { IMGCTL_AGENT_EXECUTABLE: 'nope' }, cwd: root }, '/x/a.mjs'),
    ).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });
});
