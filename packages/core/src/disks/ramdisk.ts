/**
 * The provisioning ramdisk of a store (docs/netboot.md): `imgctl ramdisk build` runs the
 * recipe `ramdisk/build.sh` as `imgctl build` runs an image's (recipe.ts), stores the kernel
 * and initramfs it leaves as blobs and writes `ramdisk/ramdisk.yaml` (docs/formats.md,
 * schemas/ramdisk.schema.json), which the server reads to network-boot a machine into it.
 */
import { createHash } from 'node:crypto';
import { lstat, readdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { BuildOptions } from './build.ts';
import { type StagedBlob, stageBlobFromFile } from './blobs.ts';
import { inRecipeScratch, readBuildInfo, recipeScript } from './recipe.ts';
import { withStoreLock } from '../store/lock.ts';
import { exists, storePaths } from '../store/store.ts';
import { ImgctlError } from '../util/errors.ts';
import { loadDocument } from '../validate/load.ts';
import { validateDocument } from '../validate/document.ts';
import { formatProblem, parseYaml, writeFileAtomic } from '../yaml/document.ts';
import { stringifyYaml } from '../yaml/yaml-edit.ts';

/** The recipe's directory in a store, and the document `imgctl ramdisk build` writes there. */
export const RAMDISK_DIR = 'ramdisk';
export const RAMDISK_FILE = `${RAMDISK_DIR}/ramdisk.yaml`;

/** A file of the ramdisk, stored as a blob. */
export interface RamdiskBlob {
  sha256: string;
  size: number;
}

export interface RamdiskDoc {
  apiVersion: 'imgctl/v1';
  kind: 'Ramdisk';
  kernel: RamdiskBlob;
  initrd: RamdiskBlob;
  /** the kernel arguments the ramdisk itself needs; the server adds imgctl.server= and the rest */
  cmdline: string;
  built: {
    at: string;
    recipe_sha256: string;
    duration_s?: number;
    tools?: Record<string, string>;
    inputs?: Record<string, string>;
  };
}

export interface RamdiskBuildRequest {
  /** the self-contained imgagent the ramdisk runs ($IMGCTL_AGENT_EXECUTABLE for the recipe) */
  agentExecutable: string;
  /** CACHE_DIR, kept between builds (default `.state/cache/build/ramdisk`) */
  cacheDir?: string;
  /** keep the scratch directory (OUT_DIR) after the build */
  keepScratch?: boolean;
}

export interface RamdiskBuildResult {
  ramdisk: RamdiskDoc;
  /** false: the recipe gave the bytes and command line already recorded; ramdisk.yaml is as it was */
  changed: boolean;
  /** the full log, kept after the build */
  log: string;
  /** the scratch directory, when kept */
  scratch?: string;
}

/** What the recipe leaves in OUT_DIR. */
const OUTPUTS = { kernel: 'vmlinuz', initrd: 'initrd.img', cmdline: 'cmdline' } as const;
const MAX_CMDLINE = 2048;

/**
 * Builds the store's ramdisk: runs `ramdisk/build.sh` in a scratch directory with OUT_DIR,
 * CACHE_DIR, SCRATCH_DIR, IMAGE_STORE and IMGCTL_AGENT_EXECUTABLE, and when it leaves
 * OUT_DIR/vmlinuz and OUT_DIR/initrd.img (and optionally OUT_DIR/cmdline and build-info.json)
 * copies both into the store as blobs, hashed while copied, then writes ramdisk.yaml atomically
 * under the store lock. Killed at any point, the store holds the previous ramdisk.yaml (at most
 * with orphan blobs, which `imgctl verify --gc` removes) or the new one. Throws NOT_FOUND when
 * the store has no recipe or the agent is missing, FAILED when the recipe fails or leaves too
 * little (the log in the hint).
 */
export async function buildRamdisk(
  storeDir: string,
  request: RamdiskBuildRequest,
  options: BuildOptions = {},
): Promise<RamdiskBuildResult> {
  const now = options.now ?? (() => new Date());
  const started = now();
  const dir = join(storeDir, RAMDISK_DIR);
  const script = await recipeScript(dir, RAMDISK_DIR, {
    message: `the store has no ramdisk recipe (${RAMDISK_DIR}/build.sh)`,
    hint: "copy ramdisk/ from imgctl's example store (image-store/ramdisk/); docs/netboot.md describes it",
  });
  const agent = resolve(request.agentExecutable);
  if (!(await exists(agent)))
    throw new ImgctlError('NOT_FOUND', `the self-contained agent ${agent} does not exist`, {
      hint: 'run npm run build (it writes dist/imgagent-linux-x64), or set IMGCTL_AGENT_EXECUTABLE',
    });
  const recipeSha256 = await recipeHash(dir);
  const cacheDir = resolve(
    request.cacheDir ?? join(storePaths.stateDir(storeDir), 'cache', 'build', RAMDISK_DIR),
  );
  const recipe = { ...options, cacheDir, keepScratch: request.keepScratch, now };
  const built = await inRecipeScratch(storeDir, RAMDISK_DIR, recipe, async (run) => {
    run.say(`running ${RAMDISK_DIR}/build.sh (log ${run.logPath})`, true);
    await run.run(script, { IMAGE_STORE: resolve(storeDir), IMGCTL_AGENT_EXECUTABLE: agent });
    const cmdline = await readCmdline(run.outDir, run.logPath);
    const info = await readBuildInfo(run.outDir, run.logPath);
    const staged: StagedBlob[] = [];
    try {
      for (const name of [OUTPUTS.kernel, OUTPUTS.initrd]) {
        const file = await producedFile(run.outDir, name, run.logPath);
        run.say(`adding ${name} to the store`, true);
        staged.push(
          await stageBlobFromFile(storeDir, file, {
            signal: options.signal,
            onProgress: options.onProgress,
          }),
        );
      }
      const [kernel, initrd] = staged as [StagedBlob, StagedBlob];
      const doc: RamdiskDoc = {
        apiVersion: 'imgctl/v1',
        kind: 'Ramdisk',
        kernel: { sha256: kernel.sha256, size: kernel.size },
        initrd: { sha256: initrd.sha256, size: initrd.size },
        cmdline,
        built: {
          at: started.toISOString().replace(/\.\d+Z$/, 'Z'),
          recipe_sha256: recipeSha256,
          duration_s: Math.round((now().getTime() - started.getTime()) / 100) / 10,
          ...(Object.keys(info.tools).length > 0 ? { tools: info.tools } : {}),
          ...(Object.keys(info.inputs).length > 0 ? { inputs: info.inputs } : {}),
        },
      };
      const text = ramdiskYaml(doc);
      return await withStoreLock(storeDir, async () => {
        for (const blob of staged) await blob.commit();
        const before = await readRamdisk(storeDir).catch(() => undefined);
        if (before && sameRamdisk(before, doc)) {
          run.say(
            `the ramdisk is unchanged (kernel sha256:${kernel.sha256.slice(0, 12)}, initrd sha256:${initrd.sha256.slice(0, 12)})`,
          );
          return { ramdisk: before, changed: false };
        }
        await writeFileAtomic(join(storeDir, RAMDISK_FILE), text);
        run.say(`wrote ${RAMDISK_FILE}: kernel ${kernel.size} bytes, initrd ${initrd.size} bytes`);
        return { ramdisk: doc, changed: true };
      });
    } catch (error) {
      await Promise.all(staged.map((blob) => blob.discard()));
      throw error;
    }
  });
  return { ...built.value, log: built.log, scratch: built.scratch };
}

/**
 * The store's ramdisk.yaml, valid. NOT_FOUND when the ramdisk was never built, VALIDATION with
 * every problem when the file is not valid.
 */
export async function readRamdisk(storeDir: string): Promise<RamdiskDoc> {
  const { value } = await loadDocument<RamdiskDoc>(
    'Ramdisk',
    join(storeDir, RAMDISK_FILE),
    RAMDISK_FILE,
  );
  return value;
}

/**
 * Every sha256 written in ramdisk.yaml, even when it does not parse: the blobs a store's
 * garbage collection keeps.
 */
export async function ramdiskBlobs(storeDir: string): Promise<string[]> {
  const text = await readFile(join(storeDir, RAMDISK_FILE), 'utf8').catch(() => '');
  return [...text.matchAll(/\b[0-9a-f]{64}\b/g)].map((m) => m[0]);
}

/**
 * The recipe's sha256: of the lines `SHA256  ./PATH` of every file under `dir` but
 * ramdisk.yaml, sorted by path (byte order), as `find . -type f | LC_ALL=C sort | xargs
 * sha256sum` prints them (the recipe's own cache key starts from the same lines).
 */
export async function recipeHash(dir: string): Promise<string> {
  const files: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    for (const entry of await readdir(join(dir, rel), { withFileTypes: true })) {
      const path = rel === '' ? entry.name : `${rel}/${entry.name}`;
      if (entry.isDirectory()) await walk(path);
      else if (entry.isFile() && path !== 'ramdisk.yaml') files.push(path);
    }
  };
  await walk('');
  const lines = await Promise.all(
    files
      .map((path) => `./${path}`)
      .sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
      .map(async (path) => `${sha256(await readFile(join(dir, path)))}  ${path}\n`),
  );
  return sha256(Buffer.from(lines.join('')));
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** ramdisk.yaml's text, checked against its schema (a bug otherwise). */
function ramdiskYaml(doc: RamdiskDoc): string {
  const text = `# Written by imgctl ramdisk build (docs/netboot.md); the blobs are in .blobs/.\n${stringifyYaml(doc)}`;
  const problems = validateDocument('Ramdisk', parseYaml(RAMDISK_FILE, text));
  if (problems.length > 0)
    throw new Error(
      `${RAMDISK_FILE} would not be valid: ${problems.map(formatProblem).join('; ')}`,
    );
  return text;
}

function sameRamdisk(a: RamdiskDoc, b: RamdiskDoc): boolean {
  return (
    a.kernel.sha256 === b.kernel.sha256 &&
    a.initrd.sha256 === b.initrd.sha256 &&
    a.cmdline === b.cmdline &&
    a.built.recipe_sha256 === b.built.recipe_sha256
  );
}

/** OUT_DIR/NAME, a regular non-empty file, else FAILED. */
async function producedFile(outDir: string, name: string, logPath: string): Promise<string> {
  const file = join(outDir, name);
  const st = await lstat(file).catch(() => undefined);
  if (!st?.isFile() || st.size === 0)
    throw new ImgctlError(
      'FAILED',
      `build.sh succeeded but left ${st ? `an empty or special OUT_DIR/${name}` : `no OUT_DIR/${name}`}; the store is unchanged`,
      { hint: `it must leave OUT_DIR/vmlinuz and OUT_DIR/initrd.img; see the log: ${logPath}` },
    );
  return file;
}

/** OUT_DIR/cmdline: one line of printable ASCII (the newline after it ignored); '' when absent. */
async function readCmdline(outDir: string, logPath: string): Promise<string> {
  const text = await readFile(join(outDir, OUTPUTS.cmdline), 'utf8').catch(() => undefined);
  if (text === undefined) return '';
  const line = text.replace(/\n$/, '').trim();
  if (!/^[ -~]*$/.test(line) || line.length > MAX_CMDLINE)
    throw new ImgctlError(
      'FAILED',
      `OUT_DIR/${OUTPUTS.cmdline} must be one line of printable ASCII, at most ${MAX_CMDLINE} characters; the store is unchanged`,
      { hint: `see the log: ${logPath}` },
    );
  return line;
}
