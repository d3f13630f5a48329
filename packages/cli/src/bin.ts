import { dropWritesToClosedPipe } from '@imgctl/core/util/output';
import { main } from './main.ts';

/** The only place that exits the process. */
export async function runBin(): Promise<void> {
  dropWritesToClosedPipe(process.stdout);
  dropWritesToClosedPipe(process.stderr);
  const code = await main(process.argv.slice(2), {
    stdout: process.stdout,
    stderr: process.stderr,
    env: process.env,
    cwd: process.cwd(),
    // listr2 wraps to stdout's width (80 when stdout is not a terminal): a terminal reporting
    // zero columns (a pty nobody sized, some serial consoles) gets plain lines instead.
    isTTY: Boolean(process.stderr.isTTY) && process.stdout.columns !== 0,
  });
  process.exitCode = code;
}
