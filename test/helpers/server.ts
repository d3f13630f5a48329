/**
 * The real `imgctl serve` as a child process on 127.0.0.1, for e2e tests: started from the
 * source entry, its URL read from the `listening on URL` line it prints on stderr.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { onTestFinished } from 'vitest';

const IMGCTL_BIN = join(
  resolve(dirname(fileURLToPath(import.meta.url)), '../..'),
  'packages/cli/bin/imgctl.js',
);

export interface StartServerOptions {
  storeDir: string;
  /** extra `imgctl serve` arguments; `--listen 127.0.0.1:0` unless they give --listen */
  args?: string[];
  env?: Record<string, string | undefined>;
  /** how long to wait for the listening line (tsx compiles on first start), ms */
  timeoutMs?: number;
}

export interface TestServer {
  /** e.g. http://127.0.0.1:41234 (https:// with --tls-cert) */
  url: string;
  port: number;
  proc: ChildProcess;
  /** everything the server printed on stderr so far (request log lines included) */
  log(): string;
  /** waits until the log holds a line matching `pattern` */
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** SIGTERM (or `signal`), then waits for the process to exit; safe to call twice */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * Starts `imgctl serve --store DIR`. Inside a test the server is stopped when the test ends;
 * from a hook, call `stop` yourself.
 */
export async function startServer(options: StartServerOptions): Promise<TestServer> {
  const args = options.args ?? [];
  const listen = args.includes('--listen') ? [] : ['--listen', '127.0.0.1:0'];
  const proc = spawn(
    process.execPath,
    [IMGCTL_BIN, 'serve', '--store', options.storeDir, ...listen, ...args],
    {
      env: { PATH: process.env.PATH, HOME: process.env.HOME, LANG: 'C', ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stderr = '';
  let stdout = '';
  const waiters = new Set<() => void>();
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  proc.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
    for (const w of waiters) w();
  });
  proc.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
  });
  proc.once('exit', () => {
    for (const w of waiters) w();
  });

  const waitForLog = (pattern: RegExp, timeoutMs = 30_000) =>
    new Promise<string>((resolve, reject) => {
      const check = () => {
        const line = stderr.split('\n').find((l) => pattern.test(l));
        if (line !== undefined) {
          done();
          resolve(line);
        } else if (proc.exitCode !== null || proc.signalCode !== null) {
          done();
          reject(
            new Error(
              `imgctl serve exited (${proc.exitCode ?? proc.signalCode}):\n${stderr}${stdout}`,
            ),
          );
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no log line matching ${pattern} within ${timeoutMs} ms:\n${stderr}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        waiters.delete(check);
      };
      waiters.add(check);
      check();
    });

  const stop = async (signal: NodeJS.Signals = 'SIGTERM') => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill(signal);
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
  };
  try {
    onTestFinished(() => stop());
  } catch {
    // started from a hook: the caller stops it
  }

  let line: string;
  try {
    line = await waitForLog(/listening on https?:\/\//, options.timeoutMs ?? 60_000);
  } catch (error) {
    await stop('SIGKILL');
    throw error;
  }
  const url = /listening on (https?:\/\/[^\s]+)/.exec(line)![1]!;
  return {
    url,
    port: Number(new URL(url).port),
    proc,
    log: () => stderr,
    waitForLog,
    stop,
  };
}

export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  text: string;
  /** the body parsed as JSON (throws when it is not) */
  json<T = unknown>(): T;
}

export interface RawRequestOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** CA certificate (PEM) for https:// */
  ca?: string | Buffer;
}

/**
 * One HTTP request with the target sent exactly as given — no URL normalization, so `..`,
 * `%2e%2e` and friends reach the server as written. A fresh connection each time.
 */
export async function rawRequest(
  baseUrl: string,
  target: string,
  options: RawRequestOptions = {},
): Promise<RawResponse> {
  const url = new URL(baseUrl);
  const { request } =
    url.protocol === 'https:' ? await import('node:https') : await import('node:http');
  return new Promise<RawResponse>((resolve, reject) => {
    const req = request(
      {
        host: url.hostname,
        port: url.port,
        method: options.method ?? 'GET',
        path: target,
        headers: options.headers,
        agent: false,
        ca: options.ca,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const body = Buffer.concat(chunks);
          const text = body.toString('utf8');
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body,
            text,
            json: <T>() => JSON.parse(text) as T,
          });
        });
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}
