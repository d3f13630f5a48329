import { mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { newcArchive, stageIntoInitrd } from './initrd-stage.ts';

describe('staging files into an initrd', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'stage-'));
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it('writes a newc archive that cpio reads back: directories, modes, contents', async () => {
    const archive = newcArchive([
      { path: 'imgctl/instructions', content: 'server=http://10.0.2.2:8460\n', mode: 0o600 },
      { path: 'imgctl/keys/server.pub', content: 'KEY', mode: 0o644 },
    ]);
    expect(archive.length % 4).toBe(0);
    const out = join(dir, 'out');
    await mkdir(out);
    const listed = await execa('cpio', ['-idv', '--quiet'], { cwd: out, input: archive });
    expect(listed.stderr.trim().split('\n')).toEqual([
      'imgctl',
      'imgctl/instructions',
      'imgctl/keys',
      'imgctl/keys/server.pub',
    ]);
    expect(await readFile(join(out, 'imgctl/instructions'), 'utf8')).toBe(
      'server=http://10.0.2.2:8460\n',
    );
    expect((await stat(join(out, 'imgctl/instructions'))).mode & 0o777).toBe(0o600);
    expect((await stat(join(out, 'imgctl'))).mode & 0o777).toBe(0o700);
    // the same files, the same bytes
    expect(newcArchive([{ path: 'a', content: 'x', mode: 0o600 }])).toEqual(
      newcArchive([{ path: 'a', content: 'x', mode: 0o600 }]),
    );
  });

  it('appends it to a copy of the initrd, aligned, mode 0600', async () => {
    const initrd = Buffer.from('not really an initrd, 31 bytes');
    const out = join(dir, 'staged');
    await stageIntoInitrd(initrd, [{ path: 'imgctl/token', content: 'T', mode: 0o600 }], out);
    const staged = await readFile(out);
    expect(staged.subarray(0, initrd.length)).toEqual(initrd);
    expect(staged.subarray(32, 38).toString()).toBe('070701');
    expect((await stat(out)).mode & 0o777).toBe(0o600);
  });

  it('refuses a path that could leave the archive', () => {
    for (const path of ['../etc/passwd', '/etc/shadow', 'a/../b', 'a b'])
      expect(() => newcArchive([{ path, content: '', mode: 0o600 }])).toThrow(/not a path/);
  });
});
