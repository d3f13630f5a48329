/**
 * `imgctl build`: runs an image's build.sh recipe in a scratch directory and adds the disks it
 * leaves behind. docs/build.md is the contract with the script (environment, outputs,
 * build-info.json).
 */
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream, type WriteStream } from 'node:fs';
import { lstat, mkdir, readdir, readFile, realpath, rm, writeFile } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';
import { hashFile } from './blobs.ts';
import { type AddDiskResult, addDisks } from './disks.ts';
import { parseYaml } from '../yaml/document.ts';
import { invalid } from '../store/edit.ts';
import { ImgctlError } from '../util/errors.ts';
import { printable } from '../util/names.ts';
import { isAlive } from '../util/pid.ts';
import { processRunner } from '../util/process.ts';
import { renderImageFile } from '../plan/image-files.ts';
import { resolvePlan } from '../plan/plan.ts';
import { ensureDir, exists, storePaths } from '../store/store.ts';
import type { StoreFile } from '../store/store-txn.ts';
import type { Disk, PlanDoc } from '../store/types.ts';
import { validateDocument } from '../validate/document.ts';
import { editYamlText } from '../yaml/yaml-edit.ts';

const runner = processRunner();

export interface BuildRequest {
  image: string;
  /** the record whose parameters the build sees and whose `build:` is written (default: the store's) */
  record?: string;
  /** keep the scratch directory (OUT_DIR, the rendered kickstart) after the build */
  keepScratch?: boolean;
  /** CACHE_DIR, kept between builds (default `.state/cache/build/IMAGE`) */
  cacheDir?: string;
}

export interface BuildOptions {
  /** every line build.sh prints (stdout and stderr), and imgctl's own progress lines */
  onLine?: (line: string) => void;
  /** a step begins (running build.sh, adding a disk): its line, which is then not passed to onLine */
  onStep?: (line: string) => void;
  /** bytes of the disk being added */
  onProgress?: (done: number, total: number) => void;
  signal?: AbortSignal;
  now?: () => Date;
}

/** What `build:` of the record holds after a build. */
export interface BuildMetadata {
  builder: 'imgctl build';
  built_at: string;
  duration_s: number;
  /** the image revision the build produced */
  revision: number;
  /** versions of the tools used: qemu-img, and whatever build-info.json reports */
  tools: Record<string, string>;
  /** sha256 of what went in: build.sh, the rendered kickstart, and build-info.json's inputs */
  inputs: Record<string, string>;
  /** sha256 of each disk produced */
  disks: Record<string, string>;
}

export interface BuildResult {
  image: string;
  record: string;
  revision: number;
  disks: AddDiskResult[];
  /** the full log, kept after the build */
  log: string;
  /** the scratch directory, when kept */
  scratch?: string;
  build: BuildMetadata;
}

/** The file build.sh may leave in OUT_DIR to report versions and inputs. */
const BUILD_INFO = 'build-info.json';

/**
 * Builds `request.image`: resolves the plan, renders the kickstart (if the image has one), runs
 * `images/IMAGE/build.sh` in `.state/build/IMAGE-STAMP-RANDOM.PID/` with the environment of
 * docs/build.md, and when it succeeds adds each system and data disk it produced
 * (`OUT_DIR/ID.FORMAT`) and writes `build:` into the record as one change (addDisks: blobs
 * first, then image.yaml and the record in one transaction under the store lock). A failure or
 * a kill at any time leaves the store as it was (at most orphan blobs) or complete. Throws FAILED (with the log path) when the script fails or produces too little,
 * NOT_FOUND when the image has no build.sh.
 */
export async function buildImage(
  storeDir: string,
  request: BuildRequest,
  options: BuildOptions = {},
): Promise<BuildResult> {
  const now = options.now ?? (() => new Date());
  const started = now();
  const plan = await resolvePlan(storeDir, { image: request.image, record: request.record });
  const image = plan.image.name;
  const imageDir = storePaths.imageDir(storeDir, image);
  const script = await buildScript(imageDir, image);

  const buildDir = join(storePaths.stateDir(storeDir), 'build');
  await mkdir(buildDir, { recursive: true });
  await removeStaleScratch(buildDir, image);
  // IMAGE-STAMP-RANDOM names the log; its scratch directory adds the pid, to spot it stale.
  const stamp = started
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
  const id = `${image}-${stamp}-${randomBytes(3).toString('hex')}`;
  const scratch = join(buildDir, `${id}.${process.pid}`);
  const outDir = join(scratch, 'out');
  const cacheDir = resolve(
    request.cacheDir ?? join(storePaths.stateDir(storeDir), 'cache', 'build', image),
  );
  const logPath = join(buildDir, `${id}.log`);
  await ensureDir(outDir);
  await ensureDir(cacheDir);
  const log = createWriteStream(logPath, { flags: 'a' });
  const say = (line: string, step = false) => {
    log.write(`${line}\n`);
    if (step && options.onStep) options.onStep(line);
    else options.onLine?.(line);
  };
  try {
    const inputs: Record<string, string> = { 'build.sh': await hashFile(script) };
    let kickstart: string | undefined;
    if (await hasKickstart(imageDir, plan)) {
      kickstart = join(scratch, 'kickstart.ks');
      const text = await renderImageFile(storeDir, plan, 'kickstart');
      await writeFile(kickstart, text, { mode: 0o600 });
      inputs[plan.provision.kickstart ?? 'kickstart.ks'] = sha256Text(text);
    }
    const env: Record<string, string> = {
      ...parameterEnv(plan),
      IMAGE_NAME: image,
      IMAGE_STORE: resolve(storeDir),
      RECORD: plan.record,
      OUT_DIR: outDir,
      CACHE_DIR: cacheDir,
      SCRATCH_DIR: scratch,
      ...(kickstart ? { KICKSTART: kickstart } : {}),
    };
    say(`running images/${image}/build.sh (record ${plan.record}; log ${logPath})`, true);
    await runScript(script, scratch, env, say, options.signal, logPath);

    const produced = await producedDisks(outDir, plan, logPath);
    const info = await readBuildInfo(outDir, logPath);
    const tools = { 'qemu-img': await qemuImgVersion(), ...info.tools };
    Object.assign(inputs, info.inputs);

    const outcome: { metadata?: BuildMetadata } = {};
    const added = await addDisks(
      storeDir,
      image,
      produced.map(({ disk, file }) => ({ image, id: disk.id, use: disk.use, file })),
      {
        signal: options.signal,
        onDisk: (request) =>
          say(
            `adding disk ${request.id} (${request.use}) from out/${request.file!.slice(outDir.length + 1)}`,
            true,
          ),
        onProgress: options.onProgress,
        onConvert: (reason) => say(`storing disk as qcow2: ${reason}`),
        alsoWrite: async ({ revision, disks }) => {
          const metadata: BuildMetadata = {
            builder: 'imgctl build',
            built_at: started.toISOString().replace(/\.\d+Z$/, 'Z'),
            duration_s: Math.round((now().getTime() - started.getTime()) / 100) / 10,
            revision,
            tools,
            inputs,
            disks: Object.fromEntries(disks.map((a) => [a.disk.id, a.disk.sha256 ?? ''])),
          };
          outcome.metadata = metadata;
          return [await buildMetadataFile(storeDir, image, plan.record, metadata)];
        },
      },
    );
    const result = { revision: outcome.metadata!.revision, added, metadata: outcome.metadata! };
    say(`built ${image} revision ${result.revision} in ${result.metadata.duration_s}s`);
    return {
      image,
      record: plan.record,
      revision: result.revision,
      disks: result.added,
      log: logPath,
      scratch: request.keepScratch ? scratch : undefined,
      build: result.metadata,
    };
  } catch (error) {
    if (error instanceof Error) say(`build failed: ${error.message}`);
    if (request.keepScratch) say(`scratch kept: ${scratch}`);
    throw error;
  } finally {
    await closeStream(log);
    // A kept scratch directory is marked so that later builds do not clear it away as stale.
    if (request.keepScratch) await writeFile(join(scratch, '.keep'), '');
    else await rm(scratch, { recursive: true, force: true });
  }
}

/** images/IMAGE/build.sh, which must be a file inside the image (no symlink out of it). */
async function buildScript(imageDir: string, image: string): Promise<string> {
  const script = join(imageDir, 'build.sh');
  const display = `images/${image}/build.sh`;
  let real: string;
  try {
    real = await realpath(script);
  } catch {
    throw new ImgctlError('NOT_FOUND', `image '${image}' has no build recipe (${display})`, {
      hint: `write ${display}: docs/build.md describes what it gets and must produce`,
    });
  }
  if (!real.startsWith((await realpath(imageDir)) + sep) || !(await lstat(real)).isFile()) {
    throw new ImgctlError('VALIDATION', `${display} leads outside images/${image}/`);
  }
  return real;
}

async function hasKickstart(imageDir: string, plan: PlanDoc): Promise<boolean> {
  return plan.provision.kickstart !== undefined || exists(join(imageDir, 'kickstart.ks'));
}

/** Every parameter as PARAM_<NAME UPPERCASED>: strings as they are, anything else as JSON. */
export function parameterEnv(plan: Pick<PlanDoc, 'parameters'>): Record<string, string> {
  const env: Record<string, string> = {};
  const from: Record<string, string> = {};
  for (const [name, value] of Object.entries(plan.parameters)) {
    const key = `PARAM_${name.toUpperCase()}`;
    if (from[key] !== undefined) {
      throw new ImgctlError(
        'VALIDATION',
        `parameters '${from[key]}' and '${name}' both become ${key} in the build environment`,
        { hint: 'rename one of them' },
      );
    }
    from[key] = name;
    if (value === null || value === undefined) env[key] = '';
    else env[key] = typeof value === 'string' ? value : JSON.stringify(value);
  }
  return env;
}

async function runScript(
  script: string,
  cwd: string,
  env: Record<string, string>,
  say: (line: string) => void,
  signal: AbortSignal | undefined,
  logPath: string,
): Promise<void> {
  try {
    await runner.run(script, [], { cwd, env, extendEnv: true, signal, onLine: say });
  } catch (error) {
    const e = error as { exitCode?: number; signal?: string; shortMessage?: string };
    const how =
      e.signal !== undefined
        ? `was killed (${e.signal})`
        : e.exitCode === undefined
          ? `could not run: ${e.shortMessage}`
          : `exited with status ${e.exitCode}`;
    throw new ImgctlError('FAILED', `build.sh ${how}; the store is unchanged`, {
      hint: `see the log: ${logPath}`,
    });
  }
}

/** The system and data disks the script produced, one `OUT_DIR/ID.FORMAT` per declared disk. */
async function producedDisks(
  outDir: string,
  plan: PlanDoc,
  logPath: string,
): Promise<Array<{ disk: Pick<Disk, 'id' | 'use'>; file: string }>> {
  const names = await readdir(outDir);
  const wanted = plan.disks.filter((d) => d.use !== 'scratch');
  const produced: Array<{ disk: Pick<Disk, 'id' | 'use'>; file: string }> = [];
  const missing: string[] = [];
  for (const disk of wanted) {
    const exact = `${disk.id}.${disk.format}`;
    const candidates = names.includes(exact)
      ? [exact]
      : names.filter((n) => n.startsWith(`${disk.id}.`) && n !== BUILD_INFO);
    if (candidates.length !== 1) missing.push(exact);
    else produced.push({ disk, file: join(outDir, candidates[0]!) });
  }
  if (missing.length > 0) {
    throw new ImgctlError(
      'FAILED',
      `build.sh succeeded but left no ${missing.map((m) => `OUT_DIR/${m}`).join(', ')}; the store is unchanged`,
      { hint: `every system and data disk must be produced; see the log: ${logPath}` },
    );
  }
  return produced;
}

interface BuildInfo {
  tools: Record<string, string>;
  inputs: Record<string, string>;
}

/** OUT_DIR/build-info.json: `{ "tools": {name: version}, "inputs": {name: sha256} }`, optional. */
async function readBuildInfo(outDir: string, logPath: string): Promise<BuildInfo> {
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

/** The record with `build:` written, everything else of the file (comments too) kept. */
async function buildMetadataFile(
  storeDir: string,
  image: string,
  record: string,
  metadata: BuildMetadata,
): Promise<StoreFile> {
  const file = storePaths.recordFile(storeDir, image, record);
  const display = storePaths.rel.recordFile(image, record);
  const text = await readFile(file, 'utf8');
  const doc = parseYaml(display, text).value as Record<string, unknown>;
  const after = editYamlText(text, [
    {
      path: ['build'],
      value: { ...metadata },
      after: doc.build === undefined ? 'description' : undefined,
    },
  ]);
  const problems = validateDocument('ImageRecord', parseYaml(display, after), {
    expectedName: record,
    expectedImage: image,
  });
  if (problems.length > 0) throw invalid(display, problems);
  return { path: file, content: after };
}

async function qemuImgVersion(): Promise<string> {
  const stdout = await runner.run('qemu-img', ['--version']).then(
    (result) => result.stdout,
    (error: unknown) => (error as { stdout?: string }).stdout ?? '',
  );
  return /version (\S+)/.exec(stdout)?.[1] ?? 'unknown';
}

/** Scratch directories of earlier builds of this image whose imgctl is gone (killed). */
async function removeStaleScratch(buildDir: string, image: string): Promise<void> {
  const pattern = new RegExp(
    `^${image.replace(/[.]/g, '\\.')}-\\d{8}T\\d{6}Z-[0-9a-f]{6}\\.(\\d+)$`,
  );
  for (const name of await readdir(buildDir)) {
    const pid = Number(pattern.exec(name)?.[1]);
    if (!pid || isAlive(pid)) continue;
    if (await exists(join(buildDir, name, '.keep'))) continue;
    await rm(join(buildDir, name), { recursive: true, force: true });
  }
}

function sha256Text(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

function closeStream(stream: WriteStream): Promise<void> {
  return new Promise((done) => stream.end(() => done()));
}
