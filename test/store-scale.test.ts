import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { makeTempDir, REPO_ROOT } from './helpers/index.ts';

interface BenchRow {
  entry: string;
  command: string;
  median_ms: number;
  limit_ms: number | null;
  pass: boolean | null;
}

describe('slow: store scale', () => {
  it('bench/store-scale meets every limit on a store of 5,000 images and 500 systems', async () => {
    const { dir } = await makeTempDir();
    const out = join(dir, 'store-scale.json');
    const bench = await execa(
      process.execPath,
      ['--import', 'tsx', join(REPO_ROOT, 'bench/store-scale.ts'), '--runs', '3', '--out', out],
      {
        cwd: REPO_ROOT,
        reject: false,
      },
    );
    const report = JSON.parse(await readFile(out, 'utf8').catch(() => 'null'));
    expect(report, `${bench.stdout}\n${bench.stderr}`).not.toBeNull();
    expect(report.store).toMatchObject({ images: 5000, systems: 500 });
    const rows = report.results as BenchRow[];
    expect(rows.map((r) => `${r.entry} ${r.command}`).sort()).toEqual([
      'bundle --help',
      'bundle image list --json',
      'bundle image validate',
      'source --help',
      'source image list --json',
      'source image validate',
    ]);
    const missed = rows
      .filter((r) => r.pass === false)
      .map((r) => `${r.entry} imgctl ${r.command}: ${r.median_ms} ms, limit ${r.limit_ms} ms`);
    expect(missed, bench.stdout).toEqual([]);
    expect(report.pass).toBe(true);
    expect(bench.exitCode).toBe(0);
  }, 900_000);
});
