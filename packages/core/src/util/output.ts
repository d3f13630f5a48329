import { type ErrorCode, EXIT, ImgctlError, isImgctlError } from './errors.ts';
import { terminalSafe } from './names.ts';

/** A plain text table: a header row and aligned columns, no borders. */
export function renderTable(headers: string[], rows: string[][]): string {
  if (rows.length === 0) return '';
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(headers.map((h) => h.toUpperCase())), ...rows.map(line)].join('\n');
}

export interface ErrorReport {
  exitCode: number;
  /** what goes to stdout (only with --json) */
  stdout: string;
  stderr: string;
}

/** An ImgctlError as the `error` member of a --json document. */
export function errorDocument(error: ImgctlError) {
  return {
    code: error.code,
    message: error.message,
    hint: error.hint ?? null,
    details: error.details,
  };
}

/**
 * How `program` (imgctl, imgagent) shows an error: a user error as one line plus its problems
 * and hint (or `{"error":…}` JSON on stdout); anything else as a bug with its stack.
 */
export function describeError(
  program: string,
  json: boolean,
  failure: unknown,
  options: { debug?: boolean } = {},
): ErrorReport {
  const error = fromSystemError(failure);
  if (isImgctlError(error)) {
    if (json) {
      const body = { error: errorDocument(error) };
      return { exitCode: error.exitCode, stdout: `${JSON.stringify(body, null, 2)}\n`, stderr: '' };
    }
    const lines = [
      `${program}: error[${error.code}]: ${error.message}`,
      ...error.details.map((d) => `  ${d}`),
    ];
    if (error.hint) lines.push(`hint: ${error.hint}`);
    // IMGCTL_DEBUG=1: where it came from, e.g. the call behind a file system error
    if (options.debug && error.cause instanceof Error && error.cause.stack)
      lines.push(`cause: ${error.cause.stack}`);
    return { exitCode: error.exitCode, stdout: '', stderr: `${lines.join('\n')}\n` };
  }
  const stack = error instanceof Error ? (error.stack ?? error.message) : String(error);
  const hint = `this is a bug in ${program}; please report it with the stack trace printed on stderr`;
  return {
    exitCode: EXIT.FAILED,
    stdout: json
      ? `${JSON.stringify({ error: { code: 'BUG', message: String(error), hint, details: [] } })}\n`
      : '',
    stderr: `${program}: internal error (a bug; please report it with this trace)\n${stack}\n`,
  };
}

/** What a binary's error report is written to. */
export interface ReportIo {
  stdout: { write(chunk: string): unknown };
  stderr: { write(chunk: string): unknown };
  /** IMGCTL_DEBUG set: a user error's cause is printed with its stack */
  env: Record<string, string | undefined>;
}

/**
 * The one place a binary turns an error into output and an exit code: `describeError` written
 * to `io`. Returns the exit code.
 */
export function reportError(program: string, io: ReportIo, json: boolean, error: unknown): number {
  const report = describeError(program, json, error, { debug: Boolean(io.env.IMGCTL_DEBUG) });
  if (report.stdout) io.stdout.write(report.stdout);
  if (report.stderr) io.stderr.write(report.stderr);
  return report.exitCode;
}

/**
 * A reader that went away (`imgctl --help | head -1`, `… | grep -q`) is not an error: what is
 * left to write to `stream` is dropped, and the binary ends with the exit code it would have had.
 */
export function dropWritesToClosedPipe(stream: NodeJS.WritableStream): void {
  stream.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE' && error.code !== 'ERR_STREAM_DESTROYED') throw error;
  });
}

/** What an operator can fix, not a bug: a file or directory missing, not allowed, full… */
const SYSTEM_ERRORS: Record<string, { code: ErrorCode; hint?: string }> = {
  ENOENT: { code: 'NOT_FOUND', hint: 'check the path: it, or a directory on it, does not exist' },
  ENOTDIR: { code: 'NOT_FOUND', hint: 'check the path: a part of it is a file, not a directory' },
  EISDIR: { code: 'USAGE', hint: 'name a file, not a directory' },
  EEXIST: { code: 'CONFLICT', hint: 'remove it or choose another name' },
  EACCES: { code: 'FAILED', hint: 'check its permissions, or run as a user allowed there' },
  EPERM: { code: 'FAILED', hint: 'check its permissions, or run as a user allowed there' },
  EROFS: { code: 'FAILED', hint: 'the filesystem is mounted read-only' },
  ENOSPC: { code: 'FAILED', hint: 'the filesystem is full: free some space and run again' },
  EDQUOT: { code: 'FAILED', hint: 'the disk quota is used up' },
};

/**
 * A Node.js file system error (ENOENT: no such file or directory, open 'x') as an ImgctlError
 * with a code and hint (`x: no such file or directory (open)`): most often a path the user
 * gave. Anything else unchanged. IMGCTL_DEBUG=1 prints the call behind it.
 */
function fromSystemError(error: unknown): unknown {
  const e = error as NodeJS.ErrnoException & { dest?: string };
  const known = typeof e?.code === 'string' ? SYSTEM_ERRORS[e.code] : undefined;
  if (!(error instanceof Error) || known === undefined || e.syscall === undefined) return error;
  if (e.path === undefined) return error;
  const reason = /^E[A-Z]+: ([^,]+)/.exec(e.message)?.[1] ?? e.code!;
  const where = terminalSafe(e.dest === undefined ? e.path : `${e.path} -> ${e.dest}`);
  return new ImgctlError(known.code, `${where}: ${reason} (${e.syscall})`, {
    hint: known.hint,
    cause: error,
  });
}
