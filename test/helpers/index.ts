/**
 * Helpers for the cross-package tests: temporary stores, the CLI in-process and as the real
 * binary a user runs, and a hash of a whole directory tree to prove it did not change.
 */
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import {
  chmod,
  cp,
  lstat,
  mkdir,
  mkdtemp,
  open,
  readdir,
  readFile,
  readlink,
  rm,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initStore } from '@imgctl/core/store/images';
import { execa } from 'execa';
import { onTestFinished } from 'vitest';
import { parse } from 'yaml';
import { main } from '../../packages/cli/src/main.ts';

export {
  rawRequest,
  type RawResponse,
  startServer,
  type StartServerOptions,
  type TestServer,
} from './server.ts';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
/** The source entry, run through tsx, as `npx imgctl` does after `npm ci`. */
export const IMGCTL_BIN = join(REPO_ROOT, 'packages/cli/bin/imgctl.js');
/** The bundle `npm run build` writes. */
export const IMGCTL_BUNDLE = join(REPO_ROOT, 'dist/imgctl.mjs');
export const EXAMPLE_STORE = join(REPO_ROOT, 'image-store');
export const MiB = 1024 * 1024;

export interface TempDir {
  dir: string;
  cleanup: () => Promise<void>;
}

/**
 * A fresh temporary directory. Inside a test it is removed when the test finishes; called from a
 * hook (beforeAll/beforeEach) the caller removes it with `cleanup`.
 */
export async function makeTempDir(prefix = 'imgctl-test-'): Promise<TempDir> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const cleanup = () => rm(dir, { recursive: true, force: true });
  removeAfterTest(cleanup);
  return { dir, cleanup };
}

function removeAfterTest(cleanup: () => Promise<void>): void {
  try {
    onTestFinished(cleanup);
  } catch {
    // not inside a running test (e.g. beforeAll): the caller owns the cleanup
  }
}

/** Writes `tree` (store-relative path → content) under `dir`; `*.sh` files are made executable. */
export async function writeTree(dir: string, tree: Record<string, string>): Promise<void> {
  for (const [rel, content] of Object.entries(tree)) {
    const path = join(dir, rel);
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, content);
    if (rel.endsWith('.sh')) await chmod(path, 0o755);
  }
}

/**
 * A new image store (core `initStore`) in a fresh temp dir, with `tree` written over it. The
 * store directory is `dir` itself; it is removed after the test (see makeTempDir).
 */
export async function makeStore(tree: Record<string, string> = {}): Promise<TempDir> {
  const temp = await makeTempDir('imgctl-store-');
  await initStore(temp.dir, { name: 'test' });
  await writeTree(temp.dir, tree);
  return temp;
}

/** A copy of the example store shipped in image-store/ (without .blobs or .state). */
export async function copyExampleStore(): Promise<TempDir> {
  const temp = await makeTempDir('imgctl-example-');
  await copyExampleStoreTo(temp.dir);
  return temp;
}

/** Copies the example store (without .blobs or .state) to `dir`, which the caller owns. */
export async function copyExampleStoreTo(dir: string): Promise<void> {
  await cp(EXAMPLE_STORE, dir, {
    recursive: true,
    filter: (src) => !/[/\\]\.(blobs|state)([/\\]|$)/.test(src.slice(EXAMPLE_STORE.length)),
  });
}

/**
 * `size` bytes of incompressible, non-zero content at `path` (an AES-CTR keystream: far faster
 * than randomBytes, so gigabytes take seconds).
 */
export async function writeRandomFile(path: string, size: number): Promise<void> {
  const cipher = createCipheriv('aes-128-ctr', randomBytes(16), randomBytes(16));
  const zeros = Buffer.alloc(Math.min(16 * 1024 * 1024, size));
  const handle = await open(path, 'w');
  try {
    for (let done = 0; done < size; done += zeros.length)
      await handle.write(cipher.update(zeros.subarray(0, Math.min(zeros.length, size - done))));
  } finally {
    await handle.close();
  }
}

/** A copy of any directory into a fresh temp dir. */
export async function copyTree(source: string): Promise<TempDir> {
  const temp = await makeTempDir('imgctl-copy-');
  await cp(source, temp.dir, { recursive: true, verbatimSymlinks: true });
  return temp;
}

export interface CliResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** added to a minimal environment (PATH, HOME); IMGCTL_STORE is never inherited */
  env?: Record<string, string | undefined>;
  /** working directory; default: the system temp dir, where no store is found */
  cwd?: string;
}

function testEnv(env: Record<string, string | undefined> = {}): Record<string, string | undefined> {
  return { PATH: process.env.PATH, HOME: process.env.HOME, LANG: 'C', NO_COLOR: '1', ...env };
}

/** Runs imgctl's `main` in this process, as the binary would, capturing its output. */
export async function runCli(args: string[], options: RunOptions = {}): Promise<CliResult> {
  let stdout = '';
  let stderr = '';
  const exitCode = await main(args, {
    stdout: { write: (chunk: string) => (stdout += chunk) },
    stderr: { write: (chunk: string) => (stderr += chunk) },
    env: testEnv(options.env),
    cwd: options.cwd ?? tmpdir(),
    isTTY: false,
  });
  return { exitCode, stdout, stderr };
}

export interface ExecOptions extends RunOptions {
  /** text written to stdin */
  input?: string;
  /** the entry to run with node; default the source entry (packages/cli/bin/imgctl.js) */
  entry?: string;
  /** killed after this long (exit code -1) */
  timeoutMs?: number;
}

/** Runs the real imgctl binary as a child process, as a user does. Never rejects. */
export async function execImgctl(args: string[], options: ExecOptions = {}): Promise<CliResult> {
  const result = await execa(process.execPath, [options.entry ?? IMGCTL_BIN, ...args], {
    cwd: options.cwd ?? tmpdir(),
    env: testEnv(options.env),
    extendEnv: false,
    input: options.input,
    timeout: options.timeoutMs,
    reject: false,
    stripFinalNewline: false,
  });
  return { exitCode: result.exitCode ?? -1, stdout: result.stdout, stderr: result.stderr };
}

/**
 * sha256 over every entry under `dir` (files, directories and symlinks, dotfiles included):
 * relative path, type, permission bits and content, in sorted order. Equal hashes mean the
 * tree is byte-for-byte the same.
 */
export async function hashTree(dir: string): Promise<string> {
  const hash = createHash('sha256');
  const entries = await readdir(dir, { recursive: true });
  for (const rel of entries.map(String).sort()) {
    const path = join(dir, rel);
    const st = await lstat(path);
    const mode = (st.mode & 0o7777).toString(8);
    if (st.isSymbolicLink()) hash.update(`L ${rel} ${await readlink(path)}\n`);
    else if (st.isDirectory()) hash.update(`D ${rel} ${mode}\n`);
    else {
      const content = await readFile(path);
      hash.update(`F ${rel} ${mode} ${content.length}\n`);
      hash.update(content);
    }
  }
  return hash.digest('hex');
}

/**
 * A hash of what a store holds for its users: every file but runtime state (.state/), the blob
 * writer's temporary files (.blobs/tmp/) and blobs no image.yaml names as `blob: true` (orphans
 * are harmless; gc removes them). Named blobs are hashed by content, so a half-written one shows.
 */
export async function storeState(store: string): Promise<string> {
  const named = new Set<string>();
  const images = await readdir(join(store, 'images'), { withFileTypes: true });
  for (const image of images.filter((e) => e.isDirectory() && !e.name.startsWith('.'))) {
    const doc = parse(await readFile(join(store, 'images', image.name, 'image.yaml'), 'utf8')) as {
      disks: Array<{ sha256?: string; blob?: boolean }>;
    };
    for (const d of doc.disks) if (d.blob && d.sha256) named.add(d.sha256);
  }
  const hash = createHash('sha256');
  const entries = await readdir(store, { recursive: true, withFileTypes: true });
  const files = entries
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name).slice(store.length + 1))
    .filter((rel) => !rel.startsWith('.state/') && !rel.startsWith('.blobs/tmp/'))
    .filter((rel) => !rel.startsWith('.blobs/sha256/') || named.has(rel.split('/').at(-1)!))
    .sort();
  for (const rel of files) {
    hash.update(`${rel}\n`);
    for await (const chunk of createReadStream(join(store, rel))) hash.update(chunk as Buffer);
  }
  return hash.digest('hex');
}

/** Every file under `dir` (relative paths, sorted), for messages when a tree changed. */
export async function listTree(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => !e.isDirectory())
    .map((e) => join(e.parentPath, e.name).slice(dir.length + 1))
    .sort();
}

/** The problem lines of a validation error (`  file:line:col path: message`), trimmed. */
export function problemLines(stderr: string): string[] {
  return stderr
    .split('\n')
    .filter((l) => /^ {2}\S+:\d+:\d+ /.test(l))
    .map((l) => l.trim());
}
