/**
 * bench/registry: imgctl against an OCI registry (Debian's docker-registry, distribution 2.8,
 * filesystem storage, on 127.0.0.1), next to skopeo in the same run (the machine is shared and
 * noisy: ratios, not absolutes). TLS from a throwaway CA and htpasswd auth on both sides
 * (--plain-http: neither).
 *
 * - push: a disk of incompressible bytes (--size-mib, default 1 GiB) as an image's only disk,
 *   `imgctl push` (the bundle) against `skopeo copy --preserve-digests oci:LAYOUT docker://…` of
 *   an OCI layout whose one layer is the same blob file (hard-linked). Each push goes to a
 *   registry of its own, so nothing is skipped or mounted. The registry writes without fsync
 *   for both.
 * - pull: `imgctl import oci://…` into an empty store against `skopeo copy --preserve-digests
 *   docker://… oci:DIR` of the same blob in the same registry. Both verify the sha256 and both
 *   fsync the blob they write (skopeo's oci: destination does; checked with strace when writing
 *   this bench), so neither has a `sync` added.
 *   Before every timed command: the source read once (page cache warm for both) and `sync` (no
 *   earlier write-back left to the next one); the order alternates from round to round; medians
 *   of --runs rounds. Ratio = skopeo's median / imgctl's. Limit: ≥ 0.9 for push and for pull.
 * - fan-out: --pulls (200) agents at once, each a process of bench/lib/pull-mirror.ts bundled
 *   (the agent's blob cache and --blob-mirror downloader, a cache dir of its own, no server to
 *   fall back on) pulling the same disk of --pull-size-mib (32 MiB) from the registry. Every
 *   pull must exit 0 with the blob in its cache (sha256 checked again here); the registry's log
 *   must show no error and no 5xx. The processes are started and loaded first (200 node starts
 *   take a while on 2 cores), then all told to go at once. Limit: 0 errors. Reported: the launch
 *   time, the wall time from "go", per-pull p50/p95 ("go" to the blob verified in its cache),
 *   the sum of the pulls' peak RSS and the least memory available during the run.
 *
 * Writes bench/results/registry.json, prints a summary, exits 1 when a limit is missed.
 *
 *   node --import tsx bench/registry.ts [--size-mib N] [--runs N] [--pulls N] [--pull-size-mib N]
 *        [--chunk-size SIZE] [--plain-http] [--skip-fanout] [--out FILE] [--keep]
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { initStore } from '../packages/core/src/store/images.ts';
import { startRegistry, type TestRegistry } from '../test/helpers/registry.ts';
import { benchArgs } from './lib/args.ts';
import { bundleScript } from './lib/bundle.ts';
import { writeOciLayout } from './lib/oci-layout.ts';
import { median, reportHead, timeIt, writeReport } from './lib/report.ts';
import { exampleStoreWith } from './lib/store.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const LIMITS = { min_ratio_to_skopeo: 0.9, max_fanout_errors: 0 };
const MiB = 1024 * 1024;
const IMAGE = 'tiny-linux';

function parseArgs(argv: string[]) {
  return benchArgs(
    argv,
    {
      sizeMib: 1024,
      runs: 3,
      pulls: 200,
      pullSizeMib: 32,
      chunkSize: '',
      plainHttp: false,
      skipFanout: false,
      keep: false,
      out: join(ROOT, 'bench/results/registry.json'),
    },
    ['out'],
  );
}

type Args = ReturnType<typeof parseArgs>;

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * MiB }))
    hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Reads `path` once, so what a command reads next comes from the page cache. */
async function warm(path: string): Promise<void> {
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * MiB })) void chunk;
}

/** A store whose tiny-linux has one disk of `size` (whole MiB) random bytes; its blob and sha256. */
async function storeWithRandomDisk(work: string, name: string, size: number) {
  const disk = join(work, `${name}.raw`);
  const count = `count=${Math.ceil(size / MiB)}`;
  await execa('dd', ['if=/dev/urandom', `of=${disk}`, 'bs=1M', count, 'status=none']);
  const hex = await sha256File(disk);
  const store = await exampleStoreWith(join(work, name), [
    { id: 'root', use: 'system', file: disk },
  ]);
  await rm(disk);
  const blob = join(store, '.blobs/sha256', hex.slice(0, 2), hex);
  if ((await stat(blob)).size !== size) throw new Error(`${blob} is not ${size} bytes`);
  return { store, hex, blob };
}

/** How imgctl and skopeo reach a registry: the same TLS and credentials, or plain http. */
function access(registry: TestRegistry, plain: boolean) {
  return plain
    ? {
        imgctl: ['--insecure-http'],
        skopeoDest: ['--dest-tls-verify=false'],
        skopeoSrc: ['--src-tls-verify=false'],
      }
    : {
        imgctl: ['--registry-auth', registry.authFile!, '--registry-ca', registry.caFile!],
        skopeoDest: ['--authfile', registry.authFile!, '--dest-cert-dir', registry.certDir!],
        skopeoSrc: ['--authfile', registry.authFile!, '--src-cert-dir', registry.certDir!],
      };
}

type Tool = 'imgctl' | 'skopeo';

/** imgctl first in even rounds, skopeo first in odd ones. */
const order = (round: number): Tool[] => (round % 2 ? ['skopeo', 'imgctl'] : ['imgctl', 'skopeo']);

interface Setup {
  args: Args;
  work: string;
  imgctl: string;
  size: number;
  disk: { store: string; hex: string; blob: string };
  layout: string;
}

const registryBlob = (registry: TestRegistry, hex: string) =>
  join(registry.storageDir, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');

async function expectSize(path: string, size: number, what: string): Promise<void> {
  const found = await stat(path).catch(() => undefined);
  if (found?.size !== size)
    throw new Error(`${what}: ${path} holds ${found?.size ?? 'nothing'}, not ${size} bytes`);
}

interface Pushed {
  tag: string;
  blobs: Array<{ digest: string; how: string; sentBytes: number }>;
}

/** `imgctl push` of the bench image to `registry`; what it says it did. */
async function imgctlPush(setup: Setup, store: string, target: string, registry: TestRegistry) {
  const chunk = setup.args.chunkSize ? ['--chunk-size', setup.args.chunkSize] : [];
  const run = await execa(process.execPath, [
    ...[setup.imgctl, '--store', store, 'push', IMAGE, target, '--json'],
    ...access(registry, setup.args.plainHttp).imgctl,
    ...chunk,
  ]);
  return JSON.parse(run.stdout) as Pushed;
}

/** One timed push by `tool` to a registry of its own; seconds. */
async function timePush(setup: Setup, tool: Tool): Promise<number> {
  const { args, disk, size } = setup;
  const registry = await startRegistry({ auth: !args.plainHttp, tls: !args.plainHttp });
  try {
    const how = access(registry, args.plainHttp);
    await warm(disk.blob);
    await execa('sync');
    let pushed: Pushed | undefined;
    const seconds = await timeIt(async () => {
      if (tool === 'imgctl')
        pushed = await imgctlPush(
          setup,
          disk.store,
          `oci://${registry.url}/bench/${IMAGE}`,
          registry,
        );
      else
        await execa('skopeo', [
          ...['copy', '--quiet', '--preserve-digests', ...how.skopeoDest],
          `oci:${setup.layout}:bench`,
          `docker://${registry.url}/bench/${IMAGE}:1`,
        ]);
    });
    const sent = pushed?.blobs.find((b) => b.digest === `sha256:${disk.hex}`);
    if (tool === 'imgctl' && (sent?.how !== 'uploaded' || sent.sentBytes !== size))
      throw new Error(`imgctl push did not upload the disk: ${JSON.stringify(pushed)}`);
    await expectSize(registryBlob(registry, disk.hex), size, `${tool} push`);
    return seconds;
  } finally {
    await registry.stop();
  }
}

/** One timed pull by `tool` from `registry` into a new store (imgctl) or layout (skopeo). */
async function timePull(
  setup: Setup,
  tool: Tool,
  registry: TestRegistry,
  sources: Record<Tool, string>,
  round: number,
): Promise<number> {
  const { args, disk, size, work } = setup;
  const how = access(registry, args.plainHttp);
  const dest = join(work, `pull-${round}-${tool}`);
  if (tool === 'imgctl') await initStore(dest, { name: 'pulled' });
  try {
    await warm(registryBlob(registry, disk.hex));
    await execa('sync');
    const seconds = await timeIt(() =>
      tool === 'imgctl'
        ? execa(process.execPath, [
            ...[setup.imgctl, '--store', dest, 'import', sources.imgctl],
            ...how.imgctl,
          ])
        : execa('skopeo', [
            ...['copy', '--quiet', '--preserve-digests', ...how.skopeoSrc],
            sources.skopeo,
            `oci:${dest}:bench`,
          ]),
    );
    const blob =
      tool === 'imgctl'
        ? join(dest, '.blobs/sha256', disk.hex.slice(0, 2), disk.hex)
        : join(dest, 'blobs/sha256', disk.hex);
    await expectSize(blob, size, `${tool} pull`);
    return seconds;
  } finally {
    await rm(dest, { recursive: true, force: true });
  }
}

interface Comparison {
  seconds: Record<Tool, number[]>;
  median_s: Record<Tool, number>;
  /** skopeo's median over imgctl's: above 1, imgctl is faster */
  ratio: number;
  mib_per_s: Record<Tool, number>;
}

/** Runs `once(tool, round)` for both tools, --runs rounds, alternating who goes first. */
async function compare(
  args: Args,
  size: number,
  once: (tool: Tool, round: number) => Promise<number>,
): Promise<Comparison> {
  const seconds: Record<Tool, number[]> = { imgctl: [], skopeo: [] };
  for (let round = 0; round < args.runs; round++)
    for (const tool of order(round)) {
      const s = await once(tool, round);
      seconds[tool].push(Math.round(s * 1000) / 1000);
      process.stderr.write(`  round ${round + 1}: ${tool} ${s.toFixed(2)} s\n`);
    }
  const median_s = { imgctl: median(seconds.imgctl), skopeo: median(seconds.skopeo) };
  const rate = (s: number) => Math.round(size / MiB / s);
  return {
    seconds,
    median_s,
    ratio: Math.round((median_s.skopeo / median_s.imgctl) * 1000) / 1000,
    mib_per_s: { imgctl: rate(median_s.imgctl), skopeo: rate(median_s.skopeo) },
  };
}

const percentile = (values: number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;
};

/** The registry's log since `from`: error lines and the count of each HTTP status it answered. */
function registryLog(log: string) {
  const statuses: Record<string, number> = {};
  for (const match of log.matchAll(/"[A-Z]+ \/v2\/[^"]*" (\d{3}) /g))
    statuses[match[1]!] = (statuses[match[1]!] ?? 0) + 1;
  // distribution's own errors, and net/http's (a TLS handshake or accept failing)
  const errors = log.split('\n').filter((line) => /level=(error|fatal|panic)|\bhttp: /.test(line));
  const serverErrors = Object.entries(statuses)
    .filter(([status]) => status >= '500')
    .reduce((n, [, count]) => n + count, 0);
  return {
    statuses,
    error_lines: errors.length,
    server_errors: serverErrors,
    errors: errors.slice(0, 5),
  };
}

/** The least MemAvailable seen until `stop()`, in MiB. */
function watchMemory() {
  let least = Infinity;
  const sample = async () => {
    const info = await readFile('/proc/meminfo', 'utf8').catch(() => '');
    const kb = Number(/MemAvailable:\s+(\d+)/.exec(info)?.[1]);
    if (Number.isFinite(kb)) least = Math.min(least, kb / 1024);
  };
  const timer = setInterval(() => void sample(), 200);
  void sample();
  return () => {
    clearInterval(timer);
    return Math.round(least);
  };
}

/** A pull-mirror process: started, ready once loaded, told to go, then its output and exit code. */
interface PullProcess {
  ready: Promise<boolean>;
  go(): void;
  done: Promise<{ code: number | null; stdout: string; stderr: string }>;
}

function startPull(args: string[]): PullProcess {
  const child = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  const ready = new Promise<boolean>((resolve) => {
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      if (stdout.startsWith('ready\n')) resolve(true);
    });
    child.once('exit', () => resolve(false));
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  child.stdin.on('error', () => undefined);
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
    child.once('close', (code) =>
      resolve({
        code,
        stdout: stdout.replace(/^ready\n/, ''),
        stderr,
      }),
    ),
  );
  return {
    ready,
    go() {
      child.stdin.end('go\n');
    },
    done,
  };
}

const round2 = (n: number) => Math.round(n * 100) / 100;

/**
 * --pulls agents pulling the fan-out disk from `registry` (repository fanout/IMAGE) at once: the
 * processes are started and loaded first, then all told to go.
 */
async function fanOut(setup: Setup, registry: TestRegistry, pullScript: string) {
  const { args, work } = setup;
  const size = args.pullSizeMib * MiB;
  const small = await storeWithRandomDisk(work, 'fanout-store', size);
  await imgctlPush(setup, small.store, `oci://${registry.url}/fanout/${IMAGE}`, registry);
  const logFrom = registry.log().length;
  const how = args.plainHttp ? ['--insecure-http'] : [registry.authFile!, registry.caFile!];
  const caches = join(work, 'fanout-caches');
  await mkdir(caches);
  await execa('sync');
  const memory = watchMemory();
  const launched = performance.now();
  const pulls = Array.from({ length: args.pulls }, (_, i) => ({
    cache: join(caches, String(i)),
    proc: startPull([
      ...[pullScript, `oci://${registry.url}/fanout`, IMAGE, small.hex],
      ...[join(caches, String(i)), ...how],
    ]),
  }));
  const ready = await Promise.all(pulls.map((p) => p.proc.ready));
  const launchSeconds = (performance.now() - launched) / 1000;
  const start = performance.now();
  for (const { proc } of pulls) proc.go();
  const results = await Promise.all(pulls.map((p) => p.proc.done));
  const wall = (performance.now() - start) / 1000;
  const leastAvailableMib = memory();
  const failures: string[] = [];
  const seconds: number[] = [];
  let rssKb = 0;
  for (const [i, run] of results.entries()) {
    let said: { seconds: number; size: number; downloaded: boolean; maxRssKb: number } | undefined;
    try {
      said = JSON.parse(run.stdout) as typeof said;
    } catch {
      said = undefined;
    }
    rssKb += said?.maxRssKb ?? 0;
    if (said) seconds.push(said.seconds);
    const blob = join(pulls[i]!.cache, 'sha256', small.hex.slice(0, 2), small.hex);
    const problem = !ready[i]
      ? `exited before it was ready: ${run.stderr.slice(-300)}`
      : run.code !== 0
        ? `exit ${run.code}: ${run.stderr.split('\n').slice(-3).join(' ')}`
        : !said?.downloaded || said.size !== size
          ? `said ${run.stdout.slice(0, 200)}`
          : /warning/.test(run.stderr)
            ? `warned: ${run.stderr.slice(0, 300)}`
            : (await sha256File(blob).catch(() => 'missing')) !== small.hex
              ? `${blob} is not sha256 ${small.hex}`
              : undefined;
    if (problem) failures.push(`pull ${i}: ${problem}`);
  }
  const log = registryLog(registry.log().slice(logFrom));
  return {
    pulls: args.pulls,
    size_bytes: size,
    errors: failures.length + log.error_lines + log.server_errors,
    failed_pulls: failures.length,
    failures: failures.slice(0, 10),
    /** starting the processes and loading them, before any pull */
    launch_s: round2(launchSeconds),
    /** from "go" to the last pull's end */
    wall_s: round2(wall),
    /** each pull, from "go" to its blob verified in its cache */
    pull_s: {
      p50: round2(percentile(seconds, 50)),
      p95: round2(percentile(seconds, 95)),
      max: round2(Math.max(...seconds)),
    },
    aggregate_mib_per_s: Math.round((args.pulls * size) / MiB / wall),
    sum_of_peak_rss_mib: Math.round(rssKb / 1024),
    least_mem_available_mib: leastAvailableMib,
    registry_log: log,
  };
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  const work = await mkdtemp(join(tmpdir(), 'bench-registry-'));
  const failures: string[] = [];
  let pullRegistry: TestRegistry | undefined;
  try {
    process.stderr.write('bundling imgctl and the pull script …\n');
    const dist = join(work, 'dist');
    await execa(process.execPath, [
      join(ROOT, 'scripts/build.mjs'),
      '--outdir',
      dist,
      '--only',
      'imgctl',
    ]);
    const pullScript = await bundleScript(
      join(ROOT, 'bench/lib/pull-mirror.ts'),
      join(dist, 'pull-mirror.mjs'),
    );
    const size = args.sizeMib * MiB;
    process.stderr.write(`a store with a ${args.sizeMib} MiB disk of random bytes …\n`);
    const disk = await storeWithRandomDisk(work, 'store', size);
    const layout = join(work, 'layout');
    await writeOciLayout(layout, { file: disk.blob, hex: disk.hex, size }, 'bench');
    const setup: Setup = { args, work, imgctl: join(dist, 'imgctl.mjs'), size, disk, layout };

    process.stderr.write('push: imgctl push against skopeo copy oci: docker:// …\n');
    const push = await compare(args, size, (tool) => timePush(setup, tool));

    process.stderr.write('pull: imgctl import oci:// against skopeo copy docker:// oci: …\n');
    pullRegistry = await startRegistry({ auth: !args.plainHttp, tls: !args.plainHttp });
    const registry = pullRegistry;
    const pushed = await imgctlPush(
      setup,
      disk.store,
      `oci://${registry.url}/bench/${IMAGE}`,
      registry,
    );
    await execa('skopeo', [
      ...['copy', '--quiet', '--preserve-digests', ...access(registry, args.plainHttp).skopeoDest],
      `oci:${layout}:bench`,
      `docker://${registry.url}/bench/skopeo:1`,
    ]);
    const sources = {
      imgctl: `oci://${registry.url}/bench/${IMAGE}:${pushed.tag}`,
      skopeo: `docker://${registry.url}/bench/skopeo:1`,
    };
    const pull = await compare(args, size, (tool, round) =>
      timePull(setup, tool, registry, sources, round),
    );

    let fanout: Awaited<ReturnType<typeof fanOut>> | { skipped: string } = {
      skipped: '--skip-fanout',
    };
    if (!args.skipFanout) {
      process.stderr.write(
        `fan-out: ${args.pulls} agents pulling ${args.pullSizeMib} MiB at once …\n`,
      );
      fanout = await fanOut(setup, registry, pullScript);
      if (fanout.errors > LIMITS.max_fanout_errors)
        failures.push(`fan-out: ${fanout.errors} errors: ${fanout.failures.join('; ')}`);
    }
    for (const [what, c] of [
      ['push', push],
      ['pull', pull],
    ] as const)
      if (c.ratio < LIMITS.min_ratio_to_skopeo)
        failures.push(`${what}: ${c.ratio}× skopeo, limit ${LIMITS.min_ratio_to_skopeo}×`);

    const report = {
      ...reportHead('registry'),
      registry: `docker-registry ${await registryVersion()} (filesystem storage), ${args.plainHttp ? 'plain http, no auth' : 'TLS + htpasswd'}`,
      skopeo: (await execa('skopeo', ['--version'])).stdout.trim(),
      size_bytes: size,
      runs: args.runs,
      chunk_size: args.chunkSize || 'default',
      limits: LIMITS,
      push,
      pull,
      fanout,
      failures,
      pass: failures.length === 0,
    };
    await writeReport(args.out, report);
    const line = (what: string, c: Comparison) =>
      `${what}: imgctl ${c.median_s.imgctl.toFixed(2)} s (${c.mib_per_s.imgctl} MiB/s), skopeo ${c.median_s.skopeo.toFixed(2)} s (${c.mib_per_s.skopeo} MiB/s): ${c.ratio.toFixed(2)}× skopeo`;
    const lines = [
      `registry: ${args.sizeMib} MiB, median of ${args.runs} rounds, ${report.registry}`,
      line('push', push),
      line('pull', pull),
      'skipped' in fanout
        ? 'fan-out: skipped'
        : `fan-out: ${fanout.pulls} × ${args.pullSizeMib} MiB at once in ${fanout.wall_s} s (${fanout.launch_s} s to start them), per pull p50 ${fanout.pull_s.p50} s p95 ${fanout.pull_s.p95} s, ${fanout.errors} errors`,
      failures.length ? `LIMIT MISSED: ${failures.join('; ')}` : 'all limits met',
      `results: ${args.out}`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
    return failures.length ? 1 : 0;
  } finally {
    await pullRegistry?.stop();
    if (!args.keep) await rm(work, { recursive: true, force: true });
    else process.stderr.write(`kept ${work}\n`);
  }
}

async function registryVersion(): Promise<string> {
  const run = await execa('docker-registry', ['--version'], { reject: false });
  return /v?\d+\.\d+\.\d+\S*/.exec(run.stdout)?.[0] ?? 'unknown';
}

process.exitCode = await main();
