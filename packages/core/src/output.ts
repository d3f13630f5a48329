import { EXIT, isImgctlError } from './errors.ts';

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

/**
 * How `program` (imgctl, imgagent) shows an error: a user error as one line plus its problems
 * and hint (or `{"error":…}` JSON on stdout); anything else as a bug with its stack.
 */
export function describeError(program: string, json: boolean, error: unknown): ErrorReport {
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
      return { exitCode: error.exitCode, stdout: `${JSON.stringify(body, null, 2)}\n`, stderr: '' };
    }
    const lines = [
      `${program}: error[${error.code}]: ${error.message}`,
      ...error.details.map((d) => `  ${d}`),
    ];
    if (error.hint) lines.push(`hint: ${error.hint}`);
    return { exitCode: error.exitCode, stdout: '', stderr: `${lines.join('\n')}\n` };
  }
  const stack = error instanceof Error ? (error.stack ?? error.message) : String(error);
  const hint = `this is a bug in ${program}; please report it with the stack trace printed on stderr`;
  return {
    exitCode: EXIT.FAILED,
    stdout: json
      ? `${JSON.stringify({ error: { code: 'BUG', message: String(error), hint } })}\n`
      : '',
    stderr: `${program}: internal error (a bug; please report it with this trace)\n${stack}\n`,
  };
}
