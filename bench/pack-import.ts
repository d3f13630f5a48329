/**
 * bench/pack-import: peak memory (and time) of `imgctl pack` and `imgctl import` of a 2 GiB
 * image, for .tar, .tar.gz and .tar.zst. Limit: every run under 150 MB peak RSS.
 *
 * Peak RSS is what GNU time reports (`/usr/bin/time -v`, "Maximum resident set size"): the
 * largest single process of the run, imgctl itself here (the gzip and zstd programs it starts
 * stay at a few MB). Both ways of running imgctl are measured: the source through tsx
 * (packages/cli/bin/imgctl.js, what the tests run) and the bundle (dist/imgctl.mjs, made by
 * `npm run build`; skipped with a note when absent).
 *
 * The disk holds 2 GiB of data a real disk image would: half incompressible (random), half
 * text-like (compresses about 3×), in 1 MiB runs, so compression does real work both ways.
 *
 *   node --import tsx bench/pack-import.ts [--dir /var/tmp] [--runs 1] [--out FILE] [--keep]
 *                                          [--bundle FILE]   (default dist/imgctl.mjs)
 */
import { createCipheriv, randomBytes } from 'node:crypto';
import { mkdtemp, open, rm, stat, statfs } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { addDisk } from '../packages/core/src/disks/disks.ts';
import { createImage, initStore } from '../packages/core/src/store/images.ts';
import { benchArgs } from './lib/args.ts';
import { median, reportHead, writeReport } from './lib/report.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const DEFAULT_RESULTS = join(ROOT, 'bench/results/pack-import.json');
const SOURCE_BIN = join(ROOT, 'packages/cli/bin/imgctl.js');
const BUNDLE = join(ROOT, 'dist/imgctl.mjs');
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const SIZE = 2 * GiB;
const LIMIT_MB = 150;

function parseArgs(argv: string[]) {
  return benchArgs(
    argv,
    { dir: '/var/tmp', runs: 1, out: DEFAULT_RESULTS, keep: false, bundle: BUNDLE },
    ['dir', 'out', 'bundle'],
  );
}

/** 1 MiB runs alternating random bytes (AES-CTR keystream) and repetitive text. */
async function writeDisk(path: string): Promise<void> {
  const cipher = createCipheriv('aes-128-ctr', randomBytes(16), randomBytes(16));
  const zeros = Buffer.alloc(MiB);
  const words = 'provision boot kernel initrd network hostname disk image record system '.repeat(2);
  const handle = await open(path, 'w');
  try {
    for (let offset = 0, i = 0; offset < SIZE; offset += MiB, i++) {
      const chunk =
        i % 2 === 0
          ? cipher.update(zeros)
          : Buffer.from(
              Array.from({ length: MiB / 16 }, (_, j) =>
                words.slice((i * 7 + j) % 60, ((i * 7 + j) % 60) + 16),
              ).join(''),
            );
      await handle.write(chunk, 0, MiB, offset);
    }
    await handle.sync();
  } finally {
    await handle.close();
  }
}

interface Run {
  ms: number;
  peak_rss_mb: number;
}

/** One imgctl run under GNU time: wall time and the peak RSS of its largest process. */
async function measure(bin: string, args: string[]): Promise<Run> {
  const result = await execa('/usr/bin/time', ['-v', process.execPath, bin, ...args], {
    reject: false,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, LANG: 'C' },
    extendEnv: false,
  });
  const rss = /Maximum resident set size \(kbytes\): (\d+)/.exec(result.stderr);
  const wall = /Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)/.exec(
    result.stderr,
  );
  if (result.exitCode !== 0 || !rss || !wall) {
    throw new Error(`imgctl ${args.join(' ')} failed (${result.exitCode}): ${result.stderr}`);
  }
  const seconds = Number(wall[1] ?? 0) * 3600 + Number(wall[2]) * 60 + Number(wall[3]);
  return { ms: Math.round(seconds * 1000), peak_rss_mb: Math.round(Number(rss[1]) / 100) / 10 };
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  const fs = await statfs(args.dir);
  const need = 8 * GiB;
  if (fs.bavail * fs.bsize < need) {
    console.error(`pack-import: ${args.dir} needs ${need / GiB} GiB free`);
    return 1;
  }
  const bins: Record<string, string> = { source: SOURCE_BIN };
  const notes: string[] = [];
  if (await stat(args.bundle).catch(() => undefined)) bins.bundle = args.bundle;
  else notes.push(`no ${args.bundle}: run 'npm run build' to measure the bundle too`);

  const work = await mkdtemp(join(args.dir, 'imgctl-bench-pack-import-'));
  try {
    const store = join(work, 'store');
    await initStore(store, { name: 'bench' });
    await createImage(store, 'big');
    const disk = join(work, 'big.raw');
    await writeDisk(disk);
    await addDisk(store, { image: 'big', id: 'root', use: 'system', file: disk });
    await rm(disk);

    const results: Record<string, Record<string, { pack: Run[]; import: Run[] }>> = {};
    const sizes: Record<string, number> = {};
    for (const [binName, bin] of Object.entries(bins)) {
      results[binName] = {};
      for (const suffix of ['tar', 'tar.gz', 'tar.zst']) {
        const runs = { pack: [] as Run[], import: [] as Run[] };
        for (let i = 0; i < args.runs; i++) {
          const archive = join(work, `big.${suffix}`);
          runs.pack.push(await measure(bin, ['pack', 'big', '-o', archive, '--store', store]));
          sizes[suffix] = (await stat(archive)).size;
          const target = join(work, `import-${binName}-${i}`);
          await initStore(target, { name: 'target' });
          runs.import.push(await measure(bin, ['import', archive, '--store', target]));
          await rm(target, { recursive: true, force: true });
          await rm(archive, { force: true });
        }
        results[binName]![suffix] = runs;
        const peak = (r: Run[]) => Math.max(...r.map((x) => x.peak_rss_mb));
        console.log(
          `  ${binName.padEnd(6)} .${suffix.padEnd(7)} pack ${peak(runs.pack)} MB ${median(runs.pack.map((r) => r.ms))} ms | import ${peak(runs.import)} MB ${median(runs.import.map((r) => r.ms))} ms`,
        );
      }
    }

    const checks = Object.entries(results).flatMap(([binName, bySuffix]) =>
      Object.entries(bySuffix).flatMap(([suffix, runs]) =>
        (['pack', 'import'] as const).map((what) => {
          const peak = Math.max(...runs[what].map((r) => r.peak_rss_mb));
          return {
            name: `${what} .${suffix} (${binName}) peak RSS, MB`,
            value: peak,
            limit: LIMIT_MB,
            pass: peak < LIMIT_MB,
          };
        }),
      ),
    );
    const report = {
      ...reportHead('pack-import'),
      image: '2 GiB disk: 1 MiB runs, half random, half text',
      measured_with: '/usr/bin/time -v: Maximum resident set size of the largest process',
      runs: args.runs,
      archive_bytes: sizes,
      notes,
      checks,
      results,
    };
    await writeReport(args.out, report);
    for (const note of notes) console.log(`  note: ${note}`);
    for (const c of checks)
      console.log(`  ${c.pass ? 'ok  ' : 'OVER'} ${c.name}: ${c.value} (limit ${c.limit})`);
    console.log(`  results: ${args.out}`);
    return checks.every((c) => c.pass) ? 0 : 1;
  } finally {
    if (!args.keep) await rm(work, { recursive: true, force: true });
    else console.error(`kept ${work}`);
  }
}

process.exitCode = await main();
