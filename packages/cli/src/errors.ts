import { describeError } from '@imgctl/core/util/output';
import type { Io } from './io.ts';

/** The one place that turns an error into output and an exit code. */
export function reportError(io: Io, json: boolean, error: unknown): number {
  const report = describeError('imgctl', json, error, { debug: Boolean(io.env.IMGCTL_DEBUG) });
  if (report.stdout) io.stdout.write(report.stdout);
  if (report.stderr) io.stderr.write(report.stderr);
  return report.exitCode;
}
