/**
 * bench/ramdisk: what `imgctl ramdisk build` makes and what it costs. In a copy of the example
 * store, with the self-contained agent built by scripts/build.mjs:
 *
 * - cold: an empty build cache (IMGCTL_BUILD_CACHE): the kernel and busybox packages are
 *   downloaded from the Debian mirror, the kernel extracted, the initramfs made and compressed;
 * - warm: the same cache without the finished pair (`out-*` removed): nothing is downloaded or
 *   extracted, the initramfs is made and compressed again — the bytes must equal the cold
 *   build's (reproducibility: two independent assemblies from the same inputs);
 * - cached: the finished pair is in the cache: it is copied (what a test run mostly sees).
 *
 * Reported: the sizes of vmlinuz and initrd.img (compressed, as the machine downloads them) and
 * of the initramfs unpacked, the three build times, the sha256 of both builds. Limits: kernel +
 * initrd at most 64 MiB; the cold and warm builds byte for byte the same.
 *
 * Writes bench/results/ramdisk.json, prints a summary, exits 1 when a limit is missed.
 *
 *   node --import tsx bench/ramdisk.ts [--dir DIR] [--out FILE]
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { benchArgs } from './lib/args.ts';
import { reportHead, writeReport } from './lib/report.ts';
import { imgctl } from './lib/store.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const MiB = 1024 * 1024;
const LIMITS = { compressed_total_bytes: 64 * MiB, reproducible: true };

interface Built {
  ramdisk: {
    kernel: { sha256: string; size: number };
    initrd: { sha256: string; size: number };
    cmdline: string;
  };
  changed: boolean;
  log: string;
}

async function main(): Promise<number> {
  const args = benchArgs(
    process.argv.slice(2),
    { dir: tmpdir(), out: join(ROOT, 'bench/results/ramdisk.json') },
    ['dir', 'out'],
  );
  const work = await mkdtemp(join(args.dir, 'imgctl-bench-ramdisk-'));
  try {
    await execa(process.execPath, [
      ...[join(ROOT, 'scripts/build.mjs'), '--outdir', join(work, 'dist')],
      ...['--only', 'imgagent-linux-x64'],
    ]);
    const agent = join(work, 'dist', 'imgagent-linux-x64');
    const store = join(work, 'store');
    await execa('cp', ['-r', join(ROOT, 'image-store'), store]);
    await rm(join(store, '.blobs'), { recursive: true, force: true });
    await rm(join(store, 'ramdisk', 'ramdisk.yaml'), { force: true });
    const cache = join(work, 'cache');
    /** `imgctl ramdisk build --json`, timed. */
    const build = async (): Promise<{ seconds: number; built: Built }> => {
      const start = performance.now();
      const run = await imgctl(store, ['ramdisk', 'build', '--json']);
      return {
        seconds: (performance.now() - start) / 1000,
        built: JSON.parse(run.stdout) as Built,
      };
    };
    process.env.IMGCTL_BUILD_CACHE = cache;
    process.env.IMGCTL_AGENT_EXECUTABLE = agent;

    console.error('ramdisk: cold build (empty cache: downloads the packages)');
    const cold = await build();
    const finished = async () =>
      (await readdir(join(cache, 'ramdisk'))).filter((n) => n.startsWith('out-'));
    for (const name of await finished())
      await rm(join(cache, 'ramdisk', name), { recursive: true });
    console.error('ramdisk: warm build (packages cached, the initramfs made again)');
    const warm = await build();
    console.error('ramdisk: cached build (the finished pair copied)');
    const cached = await build();

    const { kernel, initrd, cmdline } = cold.built.ramdisk;
    const initrdFile = join(store, '.blobs/sha256', initrd.sha256.slice(0, 2), initrd.sha256);
    const unpacked = (await execa('sh', ['-c', 'zstd -dc "$1" | wc -c', 'sh', initrdFile])).stdout;
    const agentBytes = Number((await execa('stat', ['-c', '%s', agent])).stdout);
    const reproducible =
      warm.built.ramdisk.kernel.sha256 === kernel.sha256 &&
      warm.built.ramdisk.initrd.sha256 === initrd.sha256;
    const total = kernel.size + initrd.size;
    const report = {
      ...reportHead('ramdisk'),
      limits: LIMITS,
      bytes: {
        kernel: kernel.size,
        initrd_compressed: initrd.size,
        compressed_total: total,
        initrd_unpacked: Number(unpacked.trim()),
        agent_executable: agentBytes,
      },
      mib: {
        kernel: round(kernel.size / MiB),
        initrd_compressed: round(initrd.size / MiB),
        compressed_total: round(total / MiB),
        initrd_unpacked: round(Number(unpacked.trim()) / MiB),
      },
      compression: 'zstd -19 (cpio newc)',
      cmdline,
      seconds: {
        cold: round(cold.seconds),
        warm: round(warm.seconds),
        cached: round(cached.seconds),
      },
      sha256: {
        cold: { kernel: kernel.sha256, initrd: initrd.sha256 },
        warm: {
          kernel: warm.built.ramdisk.kernel.sha256,
          initrd: warm.built.ramdisk.initrd.sha256,
        },
      },
      reproducible,
      ramdisk_yaml_unchanged_by_warm_build: !warm.built.changed,
    };
    await writeReport(args.out, report);
    console.log(
      `ramdisk: kernel ${report.mib.kernel} MiB + initrd ${report.mib.initrd_compressed} MiB = ${report.mib.compressed_total} MiB (limit 64; unpacked ${report.mib.initrd_unpacked} MiB); build cold ${report.seconds.cold}s, warm ${report.seconds.warm}s, cached ${report.seconds.cached}s; reproducible: ${reproducible}`,
    );
    const missed = [
      ...(total > LIMITS.compressed_total_bytes ? ['compressed_total_bytes'] : []),
      ...(reproducible ? [] : ['reproducible']),
    ];
    if (missed.length > 0) console.error(`ramdisk: missed limits: ${missed.join(', ')}`);
    return missed.length > 0 ? 1 : 0;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

function round(n: number): number {
  return Math.round(n * 10) / 10;
}

process.exitCode = await main();
