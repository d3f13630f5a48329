/** `imgctl serve` on 127.0.0.1 for the benchmarks: started, and its URL once it listens. */
import { type ChildProcess, spawn } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const IMGCTL = join(
  resolve(dirname(fileURLToPath(import.meta.url)), '../..'),
  'packages/cli/bin/imgctl.js',
);

/** Starts `imgctl serve --store DIR --listen 127.0.0.1:0 ARGS…`; the caller kills `proc`. */
export async function startServe(
  storeDir: string,
  args: string[] = [],
): Promise<{ url: string; proc: ChildProcess }> {
  const proc = spawn(
    process.execPath,
    [IMGCTL, 'serve', '--store', storeDir, '--listen', '127.0.0.1:0', ...args],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  const url = await new Promise<string>((resolveUrl, reject) => {
    proc.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      log += chunk;
      const m = /listening on (http:\/\/\S+)/.exec(log);
      if (m) resolveUrl(m[1]!);
    });
    proc.once('exit', () => reject(new Error(`imgctl serve exited: ${log}`)));
  });
  return { url, proc };
}
