/**
 * Runs once before the e2e files: builds every binary (`scripts/build.mjs`: imgctl.mjs,
 * imgagent.mjs, imgagent-linux-x64) into one temp dir that the files share through
 * `inject('distDir')`, instead of each building its own. A dir of its own, not dist/: the
 * sources may change while the tests run, and a running test must not see a half-new build.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import type { TestProject } from 'vitest/node';

declare module 'vitest' {
  export interface ProvidedContext {
    /** the shared build: imgctl.mjs, imgagent.mjs and imgagent-linux-x64 */
    distDir: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const dir = await mkdtemp(join(tmpdir(), 'imgctl-dist-'));
  const root = join(import.meta.dirname, '..');
  await execa(process.execPath, [join(root, 'scripts/build.mjs'), '--outdir', dir], {
    cwd: root,
  });
  project.provide('distDir', dir);
  return () => rm(dir, { recursive: true, force: true });
}
