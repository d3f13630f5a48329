/**
 * Running a build recipe (a build.sh): in a fresh scratch directory under `.state/build/`, with
 * its output in a log beside it and shown line by line, the scratch directory removed afterwards
 * (or kept and marked), and those of killed runs cleared away. `imgctl build` (build.ts) and
 * `imgctl ramdisk build` (ramdisk.ts) run their recipes through it; docs/build.md is the
 * contract with the script.
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream, type WriteStream } from 'node:fs';
import { lstat, mkdir, readdir, readFile, realpath, rm, writeFile } from 'node:fs/promises';
import { join, sep } from 'node:path';
import { ImgctlError } from '../util/errors.ts';
import { printable } from '../util/names.ts';
import { isAlive } from '../util/pid.ts';
import { processRunner } from '../util/process.ts';
import { ensureDir, exists, storePaths } from '../store/store.ts';

const runner = processRunner();

export interface RecipeOptions {
  /** CACHE_DIR, kept between runs (made when missing) */
  cacheDir: string;
  /** keep the scratch directory after the run (marked with `.keep`) */
  keepScratch?: boolean;
  /** every line the script prints (stdout and stderr), and the caller's own progress lines */
  onLine?: (line: string) => void;
  /** a step begins: its line, which is then not passed to onLine */
  onStep?: (line: string) => void;
  signal?: AbortSignal;
  now?: () => Date;
}

/** What the caller's work gets while the recipe's scratch directory exists. */
export interface RecipeRun {
  scratch: string;
  /** an empty directory in the scratch directory, for the script's outputs */
  outDir: string;
  cacheDir: string;
  /** the log, kept after the run */
  logPath: string;
  /** a line into the log and to onLine (or onStep, when `step`) */
  say(line: string, step?: boolean): void;
  /**
   * Runs `script` (directly: its execute bit and `#!` line) in the scratch directory with stdin
   * closed, imgctl's environment plus OUT_DIR, CACHE_DIR, SCRATCH_DIR and `env`. Throws FAILED
   * (the log in the hint) when it fails, is killed or cannot start.
   */
  run(script: string, env: Record<string, string>): Promise<void>;
}

/**
 * Makes `.state/build/NAME-STAMP-RANDOM.PID/` (its log `NAME-STAMP-RANDOM.log`), clearing the
 * scratch directories of NAME's earlier runs whose imgctl is gone, and calls `work` with it.
 * The scratch directory is removed when `work` ends, unless keepScratch. A failure is noted in
 * the log (`… failed: MESSAGE`) and thrown again.
 */
export async function inRecipeScratch<T>(
  storeDir: string,
  name: string,
  options: RecipeOptions,
  work: (run: RecipeRun) => Promise<T>,
): Promise<{ value: T; log: string; scratch?: string }> {
  const now = options.now ?? (() => new Date());
  const buildDir = join(storePaths.stateDir(storeDir), 'build');
  await mkdir(buildDir, { recursive: true });
  await removeStaleScratch(buildDir, name);
  // NAME-STAMP-RANDOM names the log; its scratch directory adds the pid, to spot it stale.
  const stamp = now()
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
  const id = `${name}-${stamp}-${randomBytes(3).toString('hex')}`;
  const scratch = join(buildDir, `${id}.${process.pid}`);
  const outDir = join(scratch, 'out');
  const logPath = join(buildDir, `${id}.log`);
  await ensureDir(outDir);
  await ensureDir(options.cacheDir);
  const log = createWriteStream(logPath, { flags: 'a' });
  const say = (line: string, step = false) => {
    log.write(`${line}\n`);
    if (step && options.onStep) options.onStep(line);
    else options.onLine?.(line);
  };
  const run = (script: string, env: Record<string, string>) =>
    runScript(script, scratch, {
      env: { ...env, OUT_DIR: outDir, CACHE_DIR: options.cacheDir, SCRATCH_DIR: scratch },
      say,
      signal: options.signal,
      logPath,
    });
  try {
    const value = await work({ scratch, outDir, cacheDir: options.cacheDir, logPath, say, run });
    return { value, log: logPath, scratch: options.keepScratch ? scratch : undefined };
  } catch (error) {
    if (error instanceof Error) say(`build failed: ${error.message}`);
    if (options.keepScratch) say(`scratch kept: ${scratch}`);
    throw error;
  } finally {
    await closeStream(log);
    // A kept scratch directory is marked so that later runs do not clear it away as stale.
    if (options.keepScratch) await writeFile(join(scratch, '.keep'), '');
    else await rm(scratch, { recursive: true, force: true });
  }
}

/**
 * `dir/build.sh`, which must be a file inside `dir` (no symlink out of it); `dirDisplay` names
 * `dir` in messages (`images/web`). `missing` is the NOT_FOUND error when there is none.
 */
export async function recipeScript(
  dir: string,
  dirDisplay: string,
  missing: { message: string; hint: string },
): Promise<string> {
  const script = join(dir, 'build.sh');
  let real: string;
  try {
    real = await realpath(script);
  } catch {
    throw new ImgctlError('NOT_FOUND', missing.message, { hint: missing.hint });
  }
  if (!real.startsWith((await realpath(dir)) + sep) || !(await lstat(real)).isFile()) {
    throw new ImgctlError('VALIDATION', `${dirDisplay}/build.sh leads outside ${dirDisplay}/`);
  }
  return real;
}

async function runScript(
  script: string,
  cwd: string,
  how: {
    env: Record<string, string>;
    say: (line: string) => void;
    signal: AbortSignal | undefined;
    logPath: string;
  },
): Promise<void> {
  try {
    await runner.run(script, [], {
      cwd,
      env: how.env,
      extendEnv: true,
      signal: how.signal,
      onLine: how.say,
    });
  } catch (error) {
    const e = error as { exitCode?: number; signal?: string; shortMessage?: string };
    const what =
      e.signal !== undefined
        ? `was killed (${e.signal})`
        : e.exitCode === undefined
          ? `could not run: ${e.shortMessage}`
          : `exited with status ${e.exitCode}`;
    throw new ImgctlError('FAILED', `build.sh ${what}; the store is unchanged`, {
      hint: `see the log: ${how.logPath}`,
    });
  }
}

/** The file a recipe may leave in OUT_DIR to report versions and inputs. */
export const BUILD_INFO = 'build-info.json';

export interface BuildInfo {
  tools: Record<string, string>;
  inputs: Record<string, string>;
}

/** OUT_DIR/build-info.json: `{ "tools": {name: version}, "inputs": {name: sha256} }`, optional. */
export async function readBuildInfo(outDir: string, logPath: string): Promise<BuildInfo> {
  let text: string;
  try {
    text = await readFile(join(outDir, BUILD_INFO), 'utf8');
  } catch {
    return { tools: {}, inputs: {} };
  }
  const bad = (why: string) =>
    new ImgctlError('FAILED', `OUT_DIR/${BUILD_INFO}: ${why}; the store is unchanged`, {
      hint: `see docs/build.md for its shape, and the log: ${logPath}`,
    });
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw bad(`not JSON (${(error as Error).message})`);
  }
  const info: BuildInfo = { tools: {}, inputs: {} };
  for (const key of ['tools', 'inputs'] as const) {
    const section = (parsed as Record<string, unknown> | null)?.[key];
    if (section === undefined) continue;
    if (typeof section !== 'object' || section === null || Array.isArray(section))
      throw bad(`${key} must be an object of strings`);
    for (const [name, value] of Object.entries(section)) {
      if (typeof value !== 'string') throw bad(`${key}.${printable(name)} must be a string`);
      info[key][name] = value;
    }
  }
  return info;
}

/** Scratch directories of earlier runs of `name` whose imgctl is gone (killed). */
async function removeStaleScratch(buildDir: string, name: string): Promise<void> {
  const pattern = new RegExp(
    `^${name.replace(/[.]/g, '\\.')}-\\d{8}T\\d{6}Z-[0-9a-f]{6}\\.(\\d+)$`,
  );
  for (const entry of await readdir(buildDir)) {
    const pid = Number(pattern.exec(entry)?.[1]);
    if (!pid || isAlive(pid)) continue;
    if (await exists(join(buildDir, entry, '.keep'))) continue;
    await rm(join(buildDir, entry), { recursive: true, force: true });
  }
}

function closeStream(stream: WriteStream): Promise<void> {
  return new Promise((done) => stream.end(() => done()));
}
