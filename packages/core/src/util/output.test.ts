import { describe, expect, it } from 'vitest';
import { ImgctlError } from './errors.ts';
import { reportError } from './output.ts';

/** An io for reportError, and what was written to it. */
function capture(env: Record<string, string | undefined> = {}) {
  const seen = { stdout: '', stderr: '' };
  const io = {
    stdout: { write: (s: string) => (seen.stdout += s) },
    stderr: { write: (s: string) => (seen.stderr += s) },
    env,
  };
  return { seen, io };
}

describe('reportError', () => {
  it('prints a user error as one line with its hint on stderr and returns its exit code', () => {
    const { seen, io } = capture();
    const error = new ImgctlError('NOT_FOUND', 'no image x', { hint: 'imgctl image list' });
    expect(reportError('imgagent', io, false, error)).toBe(4);
    expect(seen.stderr).toBe('imgagent: error[NOT_FOUND]: no image x\nhint: imgctl image list\n');
    expect(seen.stdout).toBe('');
  });

  it('with --json, prints the error as JSON on stdout only', () => {
    const { seen, io } = capture();
    expect(reportError('imgctl', io, true, new ImgctlError('USAGE', 'bad flag'))).toBe(2);
    expect(JSON.parse(seen.stdout)).toEqual({
      error: { code: 'USAGE', message: 'bad flag', hint: null, details: [] },
    });
    expect(seen.stderr).toBe('');
  });

  it('prints the cause of a user error only with IMGCTL_DEBUG', () => {
    const error = new ImgctlError('FAILED', 'it broke', { cause: new Error('deep down') });
    const quiet = capture();
    reportError('imgctl', quiet.io, false, error);
    expect(quiet.seen.stderr).not.toContain('deep down');
    const debug = capture({ IMGCTL_DEBUG: '1' });
    reportError('imgctl', debug.io, false, error);
    expect(debug.seen.stderr).toMatch(/cause: Error: deep down/);
  });

  it('reports anything else as a bug with its stack (exit 1)', () => {
    const { seen, io } = capture();
    expect(reportError('imgctl', io, false, new TypeError('oops'))).toBe(1);
    expect(seen.stderr).toMatch(/^imgctl: internal error \(a bug; .*\nTypeError: oops\n\s+at /);
  });
});
