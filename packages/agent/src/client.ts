import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { type Client, createClient } from '@imgctl/core/client/client';
import { checkServerUrl } from '@imgctl/core/client/server-url';
import { readTokenFile } from '@imgctl/core/client/token';
import { ImgctlError } from '@imgctl/core/util/errors';
import type { Flags } from './flags.ts';

/** The server client from --server, --token/--token-file and --trust (or their $IMGAGENT_*). */
export async function makeClient(
  flags: Flags,
  env: Record<string, string | undefined>,
  cwd: string,
): Promise<Client> {
  const server = flags.server ?? env.IMGAGENT_SERVER;
  if (!server)
    throw new ImgctlError('USAGE', 'no server: give --server URL (or set IMGAGENT_SERVER)');
  checkServerUrl(server);
  const token = await readToken(flags, env, cwd);
  const trustKey = await readTrustKey(flags, cwd);
  return createClient({ baseUrl: server, token, trustKey, retries: 2 });
}

/** The bearer token: --token, else --token-file, else $IMGAGENT_TOKEN. */
async function readToken(
  flags: Flags,
  env: Record<string, string | undefined>,
  cwd: string,
): Promise<string | undefined> {
  if (flags.token !== undefined && flags.tokenFile !== undefined)
    throw new ImgctlError('USAGE', 'give --token or --token-file, not both');
  if (flags.tokenFile === undefined) return flags.token ?? env.IMGAGENT_TOKEN;
  return readTokenFile(resolve(cwd, flags.tokenFile), '--token-file');
}

/** The server's signing public key from --trust: plans must then be signed by it. */
async function readTrustKey(flags: Flags, cwd: string): Promise<string | undefined> {
  if (flags.trust === undefined) return undefined;
  const file = resolve(cwd, flags.trust);
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    throw new ImgctlError(
      'USAGE',
      `--trust: cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? error}`,
    );
  }
}
