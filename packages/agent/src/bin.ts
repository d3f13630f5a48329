import { ImgctlError } from '@imgctl/core/util/errors';
import { dropWritesToClosedPipe } from '@imgctl/core/util/output';
import { main } from './main.ts';

/**
 * The only place that exits the process. The first SIGINT or SIGTERM interrupts the run, which
 * stops and removes what it made (as after any failure); later ones do not cut that cleanup
 * short (it may be making a half-written disk unbootable), SIGKILL does.
 */
export async function runBin(): Promise<void> {
  dropWritesToClosedPipe(process.stdout);
  dropWritesToClosedPipe(process.stderr);
  const controller = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => {
    if (controller.signal.aborted) {
      process.stderr.write(`imgagent: ${signal}: already stopping (SIGKILL stops at once)\n`);
      return;
    }
    process.stderr.write(`imgagent: ${signal}: stopping and removing what this run made\n`);
    controller.abort(
      new ImgctlError('FAILED', `interrupted by ${signal}`, {
        hint: 'run the same command again: disks already in the cache are not pulled again',
      }),
    );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    process.exitCode = await main(process.argv.slice(2), {
      stdout: process.stdout,
      stderr: process.stderr,
      env: process.env,
      cwd: process.cwd(),
      signal: controller.signal,
    });
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
