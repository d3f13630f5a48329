import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ImgctlError } from '../util/errors.ts';
import { readTokenFile } from './token.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'imgctl-token-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function tokenFile(content: string): Promise<string> {
  const file = join(dir, 'token');
  await writeFile(file, content, { mode: 0o600 });
  return file;
}

/** The ImgctlError readTokenFile throws for `content`. */
async function refusal(content: string): Promise<ImgctlError> {
  const file = await tokenFile(content);
  const error = await readTokenFile(file).catch((e: unknown) => e);
  expect(error).toBeInstanceOf(ImgctlError);
  return error as ImgctlError;
}

describe('readTokenFile', () => {
  it('reads the one line `openssl rand -hex 32 > FILE` writes, its newline dropped', async () => {
    const token = 'a1'.repeat(32);
    expect(await readTokenFile(await tokenFile(`${token}\n`))).toBe(token);
    expect(await readTokenFile(await tokenFile(`  ${token}\r\n`))).toBe(token);
    expect(await readTokenFile(await tokenFile('x'.repeat(16)))).toBe('x'.repeat(16));
    expect(await readTokenFile(await tokenFile('~'.repeat(4096)))).toBe('~'.repeat(4096));
  });

  it('refuses anything but one token of 16 to 4096 printable characters, naming the file', async () => {
    const cases: Array<[string, RegExp]> = [
      ['', /is empty/],
      ['\n \n', /is empty/],
      ['0123456789abcdef\n0123456789abcdef\n', /more than one word or line/],
      ['0123456789abcdef 0123456789abcdef', /more than one word or line/],
      ['short-token', /holds 11 characters/],
      ['x'.repeat(4097), /holds 4097 characters/],
      ['0123456789abcdef\u00e9', /other than printable ASCII/],
      ['0123456789abcdef\0', /other than printable ASCII/],
    ];
    for (const [content, problem] of cases) {
      const error = await refusal(content);
      expect(error.code, JSON.stringify(content)).toBe('USAGE');
      expect(error.message).toMatch(problem);
      expect(error.message).toContain(join(dir, 'token'));
      expect(error.message).toContain('16 to 4096 printable characters');
      expect(error.hint).toMatch(/openssl rand -hex 32/);
    }
  });

  it('never shows the token in its messages', async () => {
    for (const secret of ['SECRET-SHORT', 'SECRET-TOKEN-0123456789 SECRET-TOKEN-0123456789']) {
      const error = await refusal(secret);
      expect(`${error.message} ${error.hint ?? ''}`).not.toContain('SECRET');
    }
  });

  it('is NOT_FOUND, with the path and the reason, for a file it cannot read', async () => {
    const missing = join(dir, 'nope');
    await expect(readTokenFile(missing)).rejects.toMatchObject({
      code: 'NOT_FOUND',
      message: `token file ${missing} cannot be read (ENOENT)`,
    });
    await expect(readTokenFile(dir)).rejects.toMatchObject({
      code: 'NOT_FOUND',
      message: `token file ${dir} cannot be read (EISDIR)`,
    });
  });
});
