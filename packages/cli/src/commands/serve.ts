import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { readTokenFile } from '@imgctl/core/client/token';
import { ImgctlError } from '@imgctl/core/util/errors';
import { DEFAULT_PORT, startServer } from '@imgctl/core/server/server';
import { parseYamlValue } from '@imgctl/core/yaml/quick-yaml';
import type { Handler } from '../command.ts';

export interface ServeOptions {
  /** [HOST:]PORT */
  listen?: string;
  tlsCert?: string;
  tlsKey?: string;
  readTokenFile?: string;
  writeTokenFile?: string;
}

/**
 * Runs until SIGINT or SIGTERM. Prints `listening on URL` on stderr (even with --json: scripts
 * and tests read the bound port from it) and one line per request.
 */
export const run: Handler<ServeOptions> = async (_args, options, ctx) => {
  const storeDir = await ctx.storeDir();
  const listen = parseListen(
    options.listen ?? (await configuredListen(storeDir)) ?? `127.0.0.1:${DEFAULT_PORT}`,
  );
  const certFile = options.tlsCert;
  const keyFile = options.tlsKey;
  if ((certFile === undefined) !== (keyFile === undefined))
    throw new ImgctlError('USAGE', '--tls-cert and --tls-key go together');
  const tls =
    certFile && keyFile
      ? {
          cert: await readInput(certFile, '--tls-cert'),
          key: await readInput(keyFile, '--tls-key'),
        }
      : undefined;
  const tokenFrom = (file: string | undefined, flag: string) =>
    file === undefined ? undefined : readTokenFile(resolve(ctx.io.cwd, file), flag);
  const readToken = await tokenFrom(options.readTokenFile, '--read-token-file');
  const writeToken = await tokenFrom(options.writeTokenFile, '--write-token-file');
  const stderr = ctx.io.stderr;
  // Lines are written once per turn of the event loop: one write for a burst of requests.
  let pending: string[] = [];
  const flush = () => {
    if (pending.length > 0) stderr.write(pending.join(''));
    pending = [];
  };
  const log = (line: string) => {
    if (pending.push(`${new Date().toISOString()} ${line}\n`) === 1) setImmediate(flush);
  };
  const server = await startServer({
    storeDir,
    host: listen.host,
    port: listen.port,
    tls,
    readToken,
    writeToken,
    log,
  });
  const mode = writeToken === undefined ? 'read-only' : 'accepting events';
  stderr.write(
    `imgctl: listening on ${server.url} (store ${storeDir}; ${mode}${readToken === undefined ? '' : '; reads need a token'})\n`,
  );
  const signal = await new Promise<string>((resolve) => {
    const stop = (name: string) => () => resolve(name);
    process.once('SIGINT', stop('SIGINT'));
    process.once('SIGTERM', stop('SIGTERM'));
  });
  flush();
  stderr.write(`imgctl: ${signal}: stopping\n`);
  await server.close();
  flush();
  return { data: { url: server.url, stopped: signal }, text: '' };
};

function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):)?(\d{1,5})$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) {
    throw new ImgctlError('USAGE', `--listen takes [HOST:]PORT, got '${text}'`, {
      hint: 'e.g. --listen 127.0.0.1:8460, --listen 0.0.0.0:80, --listen [::1]:8460',
    });
  }
  const host = (m[1] ?? '127.0.0.1').replace(/^\[(.*)\]$/, '$1');
  return { host, port };
}

/**
 * store.yaml's server.listen, read without validation (not through loadStoreConfig): serve
 * starts on a store whose store.yaml is not valid, and on the address that store.yaml names.
 * Undefined when store.yaml cannot be read or parsed, or names no address.
 */
export async function configuredListen(storeDir: string): Promise<string | undefined> {
  try {
    const doc = parseYamlValue(await readFile(`${storeDir}/store.yaml`, 'utf8')) as {
      server?: { listen?: unknown };
    } | null;
    const listen = doc?.server?.listen;
    return typeof listen === 'string' || typeof listen === 'number' ? String(listen) : undefined;
  } catch {
    return undefined;
  }
}

async function readInput(file: string, flag: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (error) {
    throw new ImgctlError('NOT_FOUND', `${flag} ${file} cannot be read`, { cause: error });
  }
}
