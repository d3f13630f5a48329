/**
 * Running programs: the one place that starts a process (execa, argument arrays, never a shell
 * string). Code that runs a program takes a `ProcessRunner`, so unit tests can pass a fake.
 */
import type { Readable, Writable } from 'node:stream';
import { execa } from 'execa';

export interface RunOptions {
  input?: string;
  /** the program's whole environment; without it, the program inherits this process's */
  env?: Record<string, string>;
  /** `env` is added to this process's environment instead of replacing it */
  extendEnv?: boolean;
  cwd?: string;
  /** milliseconds after which the program is terminated and the run fails */
  timeout?: number;
  /** aborted: the program is terminated (for long ones: a conversion, a script) */
  signal?: AbortSignal;
  /** each line of output (stdout and stderr interleaved) as it comes; the output is not kept */
  onLine?: (line: string) => void;
}

/**
 * Runs a program with an argument array; rejects when it fails, with `stdout`, `stderr`,
 * `exitCode`, `signal`, `shortMessage` on the error, and `code` ENOENT when it is not installed.
 */
export interface ProcessRunner {
  run(
    file: string,
    args: string[],
    options?: RunOptions,
  ): Promise<{ stdout: string; stderr?: string }>;
}

const FORCE_KILL_MS = 5000;

/**
 * The real runner. A program given a signal runs in a process group of its own, which the abort
 * terminates whole: what a script started stops with it.
 */
export function processRunner(): ProcessRunner {
  return {
    async run(file, args, options = {}) {
      const { signal, onLine } = options;
      const child = execa(file, args, {
        input: options.input,
        env: options.env,
        extendEnv: options.env === undefined || options.extendEnv === true,
        cwd: options.cwd,
        stdin: options.input === undefined ? 'ignore' : undefined,
        timeout: options.timeout,
        detached: signal !== undefined,
        ...(onLine === undefined ? {} : { all: true, buffer: false }),
      });
      const signalGroup = (name: NodeJS.Signals) => {
        try {
          if (child.pid !== undefined) process.kill(-child.pid, name);
        } catch {
          // the group is gone already
        }
      };
      // A program that ignores SIGTERM is killed FORCE_KILL_MS later, so a cancel never hangs.
      const stop = () => {
        signalGroup('SIGTERM');
        setTimeout(() => signalGroup('SIGKILL'), FORCE_KILL_MS).unref();
      };
      if (signal?.aborted) stop();
      signal?.addEventListener('abort', stop, { once: true });
      try {
        if (onLine !== undefined) {
          try {
            for await (const line of child.iterable({ from: 'all' })) onLine(line);
          } catch {
            // how the program ended is what the run reports
          }
          await child;
          return { stdout: '' };
        }
        const result = await child;
        return { stdout: String(result.stdout), stderr: String(result.stderr) };
      } finally {
        signal?.removeEventListener('abort', stop);
      }
    },
  };
}

/** A filter program (a compressor) started by `startFilter`. */
export interface FilterProcess {
  /** the program's stdin, when it was started with stdin 'pipe' */
  stdin: Writable | null;
  /** settles when the program has exited; rejects as `ProcessRunner.run` does when it fails */
  done: Promise<unknown>;
  kill(): void;
}

/**
 * Starts `file` reading `stdin` and writing `stdout`. A stream with a file descriptor is handed
 * to the program as it is, so its bytes never pass through this process; stdin 'pipe' gives a
 * writable to feed it. The program's stderr is kept for the error.
 */
export function startFilter(
  file: string,
  args: string[],
  stdio: { stdin: Readable | 'pipe'; stdout: Writable },
): FilterProcess {
  const child = execa(file, args, {
    stdin: stdio.stdin,
    stdout: stdio.stdout,
    stderr: 'pipe',
    buffer: { stdout: false, stderr: true },
  });
  return { stdin: child.stdin, done: child, kill: () => child.kill() };
}
