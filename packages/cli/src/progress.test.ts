import { DefaultRenderer, Listr } from 'listr2';
import { describe, expect, it } from 'vitest';
import type { Context } from './command.ts';
import { createProgress, listrOptions, progressMode } from './progress.ts';

const MiB = 1024 * 1024;

function fakeContext(isTTY: boolean, json = false) {
  let stderr = '';
  const stream = {
    write: (chunk: string) => {
      stderr += chunk;
      return true;
    },
    isTTY,
    columns: 100,
  };
  const ctx: Context = {
    io: { stdout: { write: () => true }, stderr: stream, env: {}, cwd: '/', isTTY },
    json,
    storeDir: async () => '/nowhere',
    log: (line) => {
      if (!json) stream.write(`${line}\n`);
    },
  };
  return { ctx, output: () => stderr };
}

describe('progress', () => {
  it('prints plain lines when stderr is not a terminal: steps, prefixed lines, every 10%', async () => {
    const { ctx, output } = fakeContext(false);
    const progress = createProgress(ctx, { linePrefix: 'build' });
    progress.step('adding disk root');
    progress.line('from build.sh');
    for (let done = 0; done <= 100 * MiB; done += 4 * MiB) progress.bytes(done, 100 * MiB);
    await progress.end();
    const lines = output().trimEnd().split('\n');
    expect(lines.slice(0, 3)).toEqual([
      'build: adding disk root',
      'build: from build.sh',
      'build: adding disk root: 12% (12MiB of 100MiB)',
    ]);
    expect(lines).toHaveLength(2 + 10); // one line per 10% step crossed, not per chunk
    expect(lines.at(-1)).toBe('build: adding disk root: 100% (100MiB of 100MiB)');
    expect(output()).not.toContain('\u001b'); // no terminal control codes in a log
  });

  it('skips percentages of small work and prints nothing with --json', async () => {
    const small = fakeContext(false);
    const progress = createProgress(small.ctx, { minBytes: 64 * MiB });
    progress.step('packing web');
    progress.bytes(MiB, MiB);
    expect(small.output()).toBe('packing web\n');

    const json = fakeContext(false, true);
    const silent = createProgress(json.ctx);
    silent.step('packing web');
    silent.bytes(MiB, 2 * MiB);
    await silent.end();
    expect(json.output()).toBe('');
    expect(progressMode({ isTTY: true }, true)).toBe('silent');
  });

  it('uses listr2 default renderer on a terminal, on stderr, whatever stdout is', async () => {
    const { ctx, output } = fakeContext(true);
    expect(progressMode(ctx.io, false)).toBe('listr');
    expect(new Listr([], listrOptions(ctx.io.stderr)).rendererClass).toBe(DefaultRenderer);

    const progress = createProgress(ctx);
    progress.step('adding disk root');
    progress.bytes(512 * MiB, 1024 * MiB);
    progress.line('last line of the step');
    progress.step('adding disk data');
    await progress.end(new Error('broken'));
    const text = output();
    expect(text).toContain('✔ adding disk root: 50% (512MiB of 1.0GiB)');
    expect(text).toContain('last line of the step');
    expect(text).toContain('✖ adding disk data');
  });
});
