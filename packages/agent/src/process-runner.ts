import type { ProcessRunner } from '@imgctl/core/agent/steps';
import { execa } from 'execa';

/**
 * Runs tools with execa (argument arrays; a failure rejects with stdout, stderr and exitCode on
 * the error). One given a signal (a script, a conversion) runs in a process group of
 * its own, which the abort terminates whole: what a script started stops with it.
 */
export function processRunner(): ProcessRunner {
  return {
    async run(file, args, options = {}) {
      const { signal } = options;
      const child = execa(file, args, {
        input: options.input,
        env: options.env,
        extendEnv: options.env === undefined,
        cwd: options.cwd,
        stdin: options.input === undefined ? 'ignore' : undefined,
        detached: signal !== undefined,
      });
      const stop = () => {
        try {
          if (child.pid !== undefined) process.kill(-child.pid, 'SIGTERM');
        } catch {
          // the group is gone already
        }
      };
      if (signal?.aborted) stop();
      signal?.addEventListener('abort', stop, { once: true });
      try {
        const result = await child;
        return { stdout: String(result.stdout), stderr: String(result.stderr) };
      } finally {
        signal?.removeEventListener('abort', stop);
      }
    },
  };
}
