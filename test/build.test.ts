import { copyFile, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { execImgctl, IMGCTL_BUNDLE, makeTempDir, REPO_ROOT } from './helpers/index.ts';

describe('build: npm run build bundles imgctl into one file plain node runs', () => {
  it('builds dist/imgctl.mjs, which works on its own, away from node_modules', async () => {
    const build = await execa(process.execPath, [join(REPO_ROOT, 'scripts/build.mjs')], {
      cwd: REPO_ROOT,
      reject: false,
    });
    expect(build.exitCode, build.stderr).toBe(0);
    const info = await stat(IMGCTL_BUNDLE);
    expect(info.mode & 0o111).not.toBe(0);
    expect((await readFile(IMGCTL_BUNDLE, 'utf8')).startsWith('#!/usr/bin/env node\n')).toBe(true);

    // a copy in a directory with no node_modules anywhere above it
    const { dir } = await makeTempDir();
    const bundle = join(dir, 'imgctl.mjs');
    await copyFile(IMGCTL_BUNDLE, bundle);
    const run = (args: string[]) => execImgctl(args, { entry: bundle, cwd: dir });

    const version = await run(['--version']);
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    const init = await run(['init', 'store']);
    expect(init.exitCode, init.stderr).toBe(0);
    const store = join(dir, 'store');
    const create = await execImgctl(['image', 'create', 'web'], { entry: bundle, cwd: store });
    expect(create.exitCode, create.stderr).toBe(0);
    // validation needs the schemas, inlined in the bundle
    const valid = await execImgctl(['image', 'validate', '--json'], { entry: bundle, cwd: store });
    expect(valid.exitCode, valid.stderr).toBe(0);
    expect(JSON.parse(valid.stdout)).toMatchObject({ valid: true, images: 1, records: 1 });
    const invalid = await execImgctl(['image', 'set', 'web', 'devices.memory=lots'], {
      entry: bundle,
      cwd: store,
    });
    expect(invalid.exitCode).toBe(3);
    expect(invalid.stderr).toMatch(/images\/web\/image\.yaml:\d+:\d+ devices\.memory: /);
  });
});
