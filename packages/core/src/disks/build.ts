/**
 * `imgctl build`: runs an image's build.sh recipe in a scratch directory and adds the disks it
 * leaves behind. docs/build.md is the contract with the script (environment, outputs,
 * build-info.json).
 */
import { createHash } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { hashFile } from './blobs.ts';
import { type AddDiskResult, addDisks } from './disks.ts';
import { BUILD_INFO, inRecipeScratch, readBuildInfo, recipeScript } from './recipe.ts';
import { parseYaml } from '../yaml/document.ts';
import { invalid } from '../store/edit.ts';
import { ImgctlError } from '../util/errors.ts';
import { processRunner } from '../util/process.ts';
import { renderImageFile } from '../plan/image-files.ts';
import { resolvePlan } from '../plan/plan.ts';
import { exists, storePaths } from '../store/store.ts';
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
  const script = await recipeScript(imageDir, `images/${image}`, {
    message: `image '${image}' has no build recipe (images/${image}/build.sh)`,
    hint: `write images/${image}/build.sh: docs/build.md describes what it gets and must produce`,
  });
  const cacheDir = resolve(
    request.cacheDir ?? join(storePaths.stateDir(storeDir), 'cache', 'build', image),
  );
  const recipe = { ...options, cacheDir, keepScratch: request.keepScratch, now };
  const built = await inRecipeScratch(storeDir, image, recipe, async (run) => {
    const { outDir, say } = run;
    const inputs: Record<string, string> = { 'build.sh': await hashFile(script) };
    let kickstart: string | undefined;
    if (await hasKickstart(imageDir, plan)) {
      kickstart = join(run.scratch, 'kickstart.ks');
      const text = await renderImageFile(storeDir, plan, 'kickstart');
      await writeFile(kickstart, text, { mode: 0o600 });
      inputs[plan.provision.kickstart ?? 'kickstart.ks'] = sha256Text(text);
    }
    const env: Record<string, string> = {
      ...parameterEnv(plan),
      IMAGE_NAME: image,
      IMAGE_STORE: resolve(storeDir),
      RECORD: plan.record,
      ...(kickstart ? { KICKSTART: kickstart } : {}),
    };
    say(`running images/${image}/build.sh (record ${plan.record}; log ${run.logPath})`, true);
    await run.run(script, env);

    const produced = await producedDisks(outDir, plan, run.logPath);
    const info = await readBuildInfo(outDir, run.logPath);
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
    const metadata = outcome.metadata!;
    say(`built ${image} revision ${metadata.revision} in ${metadata.duration_s}s`);
    return { added, metadata };
  });
  return {
    image,
    record: plan.record,
    revision: built.value.metadata.revision,
    disks: built.value.added,
    log: built.log,
    scratch: built.scratch,
    build: built.value.metadata,
  };
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

function sha256Text(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}
