/**
 * Progress of long work (builds, disk copies, packs, imports) on stderr: listr2 tasks on a
 * terminal, plain lines otherwise (logs, CI, tests), nothing with --json. One module for every
 * command, so they all read the same.
 */
import type { DefaultRenderer } from 'listr2';
import { Listr, ListrLogger, type ListrTaskWrapper, ProcessOutput } from 'listr2';
import { humanSize } from '@imgctl/core/util/sizes';
import type { Context } from './command.ts';
import type { Io, Writer } from './io.ts';

export interface Progress {
  /** a new step begins (the previous one, if any, is done): a task on a terminal, a line otherwise */
  step(title: string): void;
  /** a line the current step printed (e.g. build.sh's output); on a terminal, its last line shows */
  line(text: string): void;
  /**
   * Bytes done of the current step; `total` NaN when unknown. Plain lines come every 10% or
   * every 5 seconds, whichever is first (a log stays short, a person still sees it move).
   */
  bytes(done: number, total: number): void;
  /** ends the last step, failed when `error` is given */
  end(error?: unknown): Promise<void>;
}

type ProgressMode = 'listr' | 'lines' | 'silent';

/** listr2 tasks when stderr is a terminal, plain lines when it is not, nothing with --json. */
export function progressMode(io: Pick<Io, 'isTTY'>, json: boolean): ProgressMode {
  if (json) return 'silent';
  return io.isTTY ? 'listr' : 'lines';
}

export interface ProgressOptions {
  /** prefix of plain lines (e.g. 'build') */
  linePrefix?: string;
  /** only steps with at least this many bytes get percentage lines (default 0) */
  minBytes?: number;
  now?: () => number;
}

/** The progress reporter for a command: see progressMode. */
export function createProgress(ctx: Context, options: ProgressOptions = {}): Progress {
  const mode = progressMode(ctx.io, ctx.json);
  if (mode === 'listr') return listrProgress(ctx.io.stderr, options);
  if (mode === 'lines') return lineProgress(ctx.log, options);
  return { step() {}, line() {}, bytes() {}, end: async () => {} };
}

/** Plain lines, each after `PREFIX: ` when given: `TITLE`, `LINE`, `TITLE: 40% (400.0 MiB of 1.0 GiB)`. */
function lineProgress(log: (line: string) => void, options: ProgressOptions = {}): Progress {
  const now = options.now ?? Date.now;
  const say = (text: string) => log(options.linePrefix ? `${options.linePrefix}: ${text}` : text);
  let label = '';
  let lastStep = 0;
  let lastTime = now();
  return {
    step(title) {
      label = title;
      lastStep = 0;
      lastTime = now();
      say(title);
    },
    line: say,
    bytes(done, total) {
      const known = Number.isFinite(total) && total > 0;
      if (known && total < (options.minBytes ?? 0)) return;
      const step = known ? Math.floor((done / total) * 10) : 0;
      const time = now();
      if ((known && step > lastStep) || time - lastTime >= 5000) {
        lastStep = step;
        lastTime = time;
        say(`${label}: ${describeBytes(done, total)}`);
      }
    },
    end: async () => {},
  };
}

/** The listr2 options of a progress task writing to `stderr`. */
export function listrOptions(stderr: Writer) {
  const output = stderr as NodeJS.WriteStream;
  const rendererOptions = {
    logger: new ListrLogger({ processOutput: new ProcessOutput(output, output) }),
    showErrorMessage: false,
  };
  return {
    // listr2 checks process.stdout for a terminal; progress goes to stderr, which progressMode
    // has checked already, so both of its choices are the default renderer, on stderr.
    renderer: 'default' as const,
    rendererOptions,
    fallbackRenderer: 'default' as const,
    fallbackRendererOptions: rendererOptions,
    registerSignalListeners: false,
  };
}

/** One listr2 task per step; the task's title carries the percentage, its output the last line. */
function listrProgress(stderr: Writer, options: ProgressOptions): Progress {
  interface Step {
    title: string;
    task?: ListrTaskWrapper<unknown, typeof DefaultRenderer, typeof DefaultRenderer>;
    finish: (error?: unknown) => void;
    /** what came before listr2 started the task (its renderer loads modules first) */
    shown: { title?: string; output?: string };
  }
  let current: Step | undefined;
  // Steps render one after the other: a listr2 renderer takes over the stream until it ends.
  let rendering: Promise<unknown> = Promise.resolve();
  const finishCurrent = (error?: unknown) => {
    current?.finish(error);
    current = undefined;
  };
  return {
    step(title) {
      finishCurrent();
      let finish: (error?: unknown) => void = () => {};
      const finished = new Promise<void>((resolve, reject) => {
        finish = (error) => (error === undefined ? resolve() : reject(error));
      });
      finished.catch(() => undefined); // settled before listr2 awaits it, at times
      const step: Step = { title, finish, shown: {} };
      current = step;
      rendering = rendering.then(() =>
        new Listr(
          [
            {
              title,
              task: (_ctx, task) => {
                step.task = task;
                if (step.shown.title !== undefined) task.title = step.shown.title;
                if (step.shown.output !== undefined) task.output = step.shown.output;
                return finished;
              },
            },
          ],
          listrOptions(stderr),
        )
          .run()
          // the command reports the error itself; the task only shows that it failed
          .catch(() => undefined),
      );
    },
    line(text) {
      if (!current) return;
      current.shown.output = text;
      if (current.task) current.task.output = text;
    },
    bytes(done, total) {
      if (!current) return;
      if (Number.isFinite(total) && total < (options.minBytes ?? 0)) return;
      current.shown.title = `${current.title}: ${describeBytes(done, total)}`;
      if (current.task) current.task.title = current.shown.title;
    },
    async end(error) {
      finishCurrent(error);
      await rendering;
    },
  };
}

function describeBytes(done: number, total: number): string {
  return Number.isFinite(total) && total > 0
    ? `${Math.floor((done / total) * 100)}% (${humanSize(done)} of ${humanSize(total)})`
    : humanSize(done);
}

/** Archives smaller than this get no progress lines: they are done before one would help. */
export const PROGRESS_MIN_BYTES = 64 * 1024 * 1024;

/** Runs `work` with a progress reporter (see createProgress) and ends it however work ends. */
export async function withProgress<T>(
  ctx: Context,
  options: ProgressOptions,
  work: (progress: Progress) => Promise<T>,
): Promise<T> {
  const progress = createProgress(ctx, options);
  let result: T;
  try {
    result = await work(progress);
  } catch (error) {
    await progress.end(error);
    throw error;
  }
  await progress.end();
  return result;
}
