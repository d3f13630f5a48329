/**
 * bench/registry reduced for CI: a 256 MiB disk pushed and pulled by imgctl and by skopeo (two
 * rounds), and the fan-out in full — 200 agents pulling a 16 MiB disk from the registry at once
 * — which must end with 0 errors. The ratios to skopeo are reported, not asserted: at 256 MiB
 * on a shared 2-core machine they do not hold with a margin (imgctl's start, ~0.8 s against
 * skopeo's ~0.1 s, weighs on a 2 s transfer; the 1 GiB figures are in
 * bench/results/registry.json).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { makeTempDir, REPO_ROOT } from './helpers/index.ts';

interface Comparison {
  seconds: { imgctl: number[]; skopeo: number[] };
  median_s: { imgctl: number; skopeo: number };
  ratio: number;
}

describe('slow: registry bench', () => {
  it('pushes and pulls against skopeo, and 200 agents pull from the registry at once without an error', async () => {
    const { dir } = await makeTempDir();
    const out = join(dir, 'registry.json');
    const bench = await execa(
      process.execPath,
      [
        ...['--import', 'tsx', join(REPO_ROOT, 'bench/registry.ts')],
        ...['--size-mib', '256', '--runs', '2', '--pulls', '200', '--pull-size-mib', '16'],
        ...['--out', out],
      ],
      { cwd: REPO_ROOT, reject: false },
    );
    const report = JSON.parse(await readFile(out, 'utf8').catch(() => 'null'));
    expect(report, `${bench.stdout}\n${bench.stderr}`).not.toBeNull();
    expect(report.size_bytes).toBe(256 * 1024 * 1024);
    for (const what of ['push', 'pull'] as const) {
      const c = report[what] as Comparison;
      expect(c.seconds.imgctl).toHaveLength(2);
      expect(c.seconds.skopeo).toHaveLength(2);
      expect(c.ratio).toBeCloseTo(c.median_s.skopeo / c.median_s.imgctl, 2);
      expect(c.ratio).toBeGreaterThan(0);
    }
    const { fanout } = report;
    expect(fanout.pulls).toBe(200);
    expect(fanout.failures, bench.stdout).toEqual([]);
    expect(fanout.registry_log.errors).toEqual([]);
    expect(fanout.errors).toBe(0);
    // every pull asked once without credentials and once with them: 200 blobs served
    expect(fanout.registry_log.statuses['200']).toBe(200);
    expect(fanout.pull_s.p95).toBeGreaterThanOrEqual(fanout.pull_s.p50);
    // only the ratios may miss their limit here
    expect(report.failures.filter((f: string) => !/× skopeo/.test(f))).toEqual([]);
  }, 600_000);
});
