import { EXIT, isImgctlError } from '@imgctl/core/errors';
import type { Io } from './io.ts';

/** The one place that turns an error into output and an exit code. */
export function reportError(io: Io, json: boolean, error: unknown): number {
  if (isImgctlError(error)) {
    if (json) {
      const body = {
        error: {
          code: error.code,
          message: error.message,
          hint: error.hint ?? null,
          details: error.details,
        },
      };
      io.stdout.write(`${JSON.stringify(body, null, 2)}\n`);
    } else {
      const lines = [
        `imgctl: error[${error.code}]: ${error.message}`,
        ...error.details.map((d) => `  ${d}`),
      ];
      if (error.hint) lines.push(`hint: ${error.hint}`);
      io.stderr.write(`${lines.join('\n')}\n`);
    }
    return error.exitCode;
  }
  const stack = error instanceof Error ? (error.stack ?? error.message) : String(error);
  if (json) {
    io.stdout.write(
      `${JSON.stringify({ error: { code: 'BUG', message: String(error), hint: 'this is a bug in imgctl; please report it with the stack trace printed on stderr' } })}\n`,
    );
  }
  io.stderr.write(`imgctl: internal error (a bug; please report it with this trace)\n${stack}\n`);
  return EXIT.FAILED;
}
