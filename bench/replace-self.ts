/**
 * bench/replace-self: what `imgagent --replace-self` costs, against what a sysadmin would
 * script, in the same run (the machine is shared and noisy: ratios, not absolutes). The agent
 * is the single-file bundle (dist/imgagent.mjs), as deployed on targets.
 *
 * 1. A 1 GiB random raw system disk (an MBR in front, so the config partition can be added)
 *    written onto a file target by the agent: streamed from `imgctl serve` on 127.0.0.1 while
 *    hashed, fsynced, read back from the disk (its cached pages dropped first) and checked,
 *    the config partition and provision.sh included —
 *    against `curl URL | dd of=TARGET bs=1M` followed by `sha256sum TARGET`, and against the
 *    unverified `curl | dd` alone. Runs take turns --repeat times (default 3); medians compared.
 *    Limit: at least as fast as curl | dd + sha256sum; reported (goal 0.9×): the ratio to
 *    curl | dd.
 * 2. An 8 GiB sparse image holding 512 MiB of data (stored by `disk add` as qcow2, as it stores
 *    every mostly-empty disk): pulled into the cache, `qemu-img convert -n` onto the target,
 *    compared. Limit: its time per MiB of data at most 2× the 1 GiB disk's (proportional to the
 *    data, not the 8 GiB).
 * 3. Peak RSS of the agent in both: limit 150 MB.
 *
 * Writes bench/results/replace-self.json, prints a summary, exits 1 when a limit is missed.
 *
 *   node --import tsx bench/replace-self.ts [--repeat N] [--dir DIR] [--out FILE]
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { writeRandomFile } from '../test/helpers/index.ts';
import { benchArgs } from './lib/args.ts';
import { median, reportHead, timeIt, writeReport } from './lib/report.ts';
import { startServe } from './lib/serve.ts';
import { bundleAgent, exampleStoreWith } from './lib/store.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const IMGCTL = join(ROOT, 'packages/cli/bin/imgctl.js');
const LIMITS = {
  min_ratio_to_curl_dd_sha256sum: 1.0,
  max_sparse_per_mib_ratio: 2,
  max_rss_mb: 150,
};
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
/** room for the config partition after the image */
const SPARE = 8 * MiB;

function parseArgs(argv: string[]) {
  return benchArgs(
    argv,
    { repeat: 3, dir: tmpdir(), out: join(ROOT, 'bench/results/replace-self.json') },
    ['dir', 'out'],
  );
}

/** An image `name` (a copy of tiny-linux) whose system disk is `file`; its blob's sha256. */
async function addImage(
  store: string,
  name: string,
  file: string,
): Promise<{ sha256: string; format: string }> {
  const imgctl = (args: string[]) => execa(process.execPath, [IMGCTL, '--store', store, ...args]);
  await imgctl(['image', 'copy', 'tiny-linux', name]);
  const added = await imgctl([
    'disk',
    'add',
    name,
    '--id',
    'root',
    '--use',
    'system',
    file,
    '--json',
  ]);
  const { disk } = JSON.parse(added.stdout) as { disk: { sha256: string; format: string } };
  return disk;
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  const work = await mkdtemp(join(args.dir, 'bench-replace-self-'));
  const servers: ChildProcess[] = [];
  const failures: string[] = [];
  try {
    const agentBin = await bundleAgent(join(work, 'dist'));
    const store = await exampleStoreWith(join(work, 'store'), []);

    // 1 GiB of random data behind an MBR with one partition.
    const dense = join(work, 'dense.raw');
    await writeRandomFile(dense, GiB);
    await execa('sfdisk', ['--quiet', dense], {
      input: 'label: dos\nstart=2048, size=2093056, type=83\n',
    });
    const denseImage = await addImage(store, 'bench-1g', dense);
    await rm(dense);
    // 8 GiB, 512 MiB of it data: 8 regions of 64 MiB, 1 GiB apart.
    const sparse = join(work, 'sparse.raw');
    await execa('truncate', ['-s', String(8 * GiB), sparse]);
    const chunk = join(work, 'chunk.raw');
    for (let i = 0; i < 8; i++) {
      await writeRandomFile(chunk, 64 * MiB);
      await execa('dd', [
        `if=${chunk}`,
        `of=${sparse}`,
        'bs=1M',
        `seek=${i * 1024 + 16}`,
        'conv=notrunc,sparse',
        'status=none',
      ]);
    }
    await execa('sfdisk', ['--quiet', sparse], {
      input: 'label: dos\nstart=2048, size=16775168, type=83\n',
    });
    const sparseImage = await addImage(store, 'bench-8g', sparse);
    await rm(sparse);
    await rm(chunk);

    const serve = await startServe(store);
    servers.push(serve.proc);
    const blobUrl = `${serve.url}/v1/blobs/sha256/${denseImage.sha256}`;
    const target = join(work, 'target.raw');
    const freshTarget = async (size: number) => {
      await rm(target, { force: true });
      await execa('truncate', ['-s', String(size), target]);
    };
    const runAgent = async (image: string, cache: string) => {
      const r = await execa('/usr/bin/time', [
        '-f',
        'RSS_KB=%M',
        process.execPath,
        agentBin,
        '--server',
        serve.url,
        '--replace-self',
        '--image',
        image,
        '--target-disk',
        target,
        '--cache-dir',
        cache,
        '--log-dir',
        join(work, 'logs'),
        '--json',
      ]);
      const result = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))) as {
        disks: Array<{ verified?: boolean }>;
      };
      if (!result.disks[0]?.verified) throw new Error(`agent: disk not verified: ${r.stdout}`);
      return Number(/RSS_KB=(\d+)/.exec(r.stderr)![1]) / 1024;
    };
    const curlDd = () =>
      execa('bash', [
        '-c',
        'set -o pipefail; curl -sf "$1" | dd of="$2" bs=1M status=none',
        'bench',
        blobUrl,
        target,
      ]);

    const runs: Record<'agent' | 'curl_dd_sha256sum' | 'curl_dd', number[]> = {
      agent: [],
      curl_dd_sha256sum: [],
      curl_dd: [],
    };
    const rss: number[] = [];
    for (let i = 0; i < args.repeat; i++) {
      await freshTarget(GiB + SPARE);
      runs.agent.push(
        await timeIt(async () => rss.push(await runAgent('bench-1g', join(work, 'cache')))),
      );
      await freshTarget(GiB + SPARE);
      runs.curl_dd_sha256sum.push(
        await timeIt(async () => {
          await curlDd();
          // dd truncates the file after what it wrote: the file is the blob
          const sum = await execa('sha256sum', [target]);
          if (!sum.stdout.startsWith(denseImage.sha256))
            throw new Error('curl | dd: wrong content');
        }),
      );
      await freshTarget(GiB + SPARE);
      runs.curl_dd.push(await timeIt(curlDd));
    }
    const dense1g = {
      size_bytes: GiB,
      seconds: runs,
      median_s: {
        agent: median(runs.agent),
        curl_dd_sha256sum: median(runs.curl_dd_sha256sum),
        curl_dd: median(runs.curl_dd),
      },
      ratio_to_curl_dd_sha256sum: median(runs.curl_dd_sha256sum) / median(runs.agent),
      ratio_to_curl_dd: median(runs.curl_dd) / median(runs.agent),
      peak_rss_mb: Math.round(Math.max(...rss)),
    };
    if (dense1g.ratio_to_curl_dd_sha256sum < LIMITS.min_ratio_to_curl_dd_sha256sum)
      failures.push(
        `1 GiB: ${dense1g.ratio_to_curl_dd_sha256sum.toFixed(2)}× curl|dd+sha256sum, limit ${LIMITS.min_ratio_to_curl_dd_sha256sum}×`,
      );

    // The sparse image: a fresh cache each time, so each run pulls its 512 MiB of data.
    const sparseRuns: number[] = [];
    const sparseRss: number[] = [];
    for (let i = 0; i < args.repeat; i++) {
      await freshTarget(8 * GiB + SPARE);
      const cache = join(work, `cache-sparse-${i}`);
      sparseRuns.push(await timeIt(async () => sparseRss.push(await runAgent('bench-8g', cache))));
      await rm(cache, { recursive: true, force: true });
    }
    const perMiB = median(sparseRuns) / 512 / (median(runs.agent) / 1024);
    const sparse8g = {
      size_bytes: 8 * GiB,
      data_bytes: 512 * MiB,
      stored_as: sparseImage.format,
      seconds: sparseRuns,
      median_s: median(sparseRuns),
      per_mib_of_data_vs_1g: Math.round(perMiB * 100) / 100,
      peak_rss_mb: Math.round(Math.max(...sparseRss)),
    };
    if (perMiB > LIMITS.max_sparse_per_mib_ratio)
      failures.push(
        `8 GiB sparse: ${perMiB.toFixed(2)}× the 1 GiB time per MiB of data, limit ${LIMITS.max_sparse_per_mib_ratio}×`,
      );
    const peak = Math.max(dense1g.peak_rss_mb, sparse8g.peak_rss_mb);
    if (peak > LIMITS.max_rss_mb) failures.push(`rss: ${peak} MB, limit ${LIMITS.max_rss_mb}`);

    const report = {
      ...reportHead('replace-self'),
      limits: LIMITS,
      dense_1g: dense1g,
      sparse_8g: sparse8g,
      failures,
      ok: failures.length === 0,
    };
    await writeReport(args.out, report);
    process.stdout.write(
      `${JSON.stringify({ dense_1g: { median_s: dense1g.median_s, ratio_to_curl_dd_sha256sum: dense1g.ratio_to_curl_dd_sha256sum, ratio_to_curl_dd: dense1g.ratio_to_curl_dd, peak_rss_mb: dense1g.peak_rss_mb }, sparse_8g: sparse8g, failures }, null, 2)}\n`,
    );
    return failures.length === 0 ? 0 : 1;
  } finally {
    for (const s of servers) s.kill('SIGTERM');
    await rm(work, { recursive: true, force: true });
  }
}

process.exitCode = await main();
