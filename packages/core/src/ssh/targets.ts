/**
 * What `imgctl provision` is pointed at: its targets (addresses or the store's systems) and the
 * server URL the targets' agents use (docs/provision.md, "Targets").
 */
import { readFile } from 'node:fs/promises';
import { createClient } from '../client/client.ts';
import { checkServerUrl } from '../client/server-url.ts';
import { parseImageRef, resolveImageRef } from '../store/releases.ts';
import { ImgctlError } from '../util/errors.ts';
import { isValidName } from '../util/names.ts';
import { loadStoreConfig } from '../store/store-config.ts';
import { exists, storePaths } from '../store/store.ts';
import { showSystem } from '../store/systems.ts';
import type { ProvisionTarget } from './provision.ts';
import { parseSshAddress } from './ssh.ts';

/** The SSH user of a target that names none: the agent needs root. */
const DEFAULT_USER = 'root';

/** The targets of a `--targets` file: one per line; blank lines and `#` comments skipped. */
export async function readTargetsFile(file: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new ImgctlError(
      'USAGE',
      `--targets: cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`,
    );
  }
  return text
    .split('\n')
    .map((l) => l.replace(/#.*/, '').trim())
    .filter((l) => l !== '');
}

/**
 * `[user@]host[:port]` is an address; a bare word naming a system of the store is that system
 * (its `address`, and `--system` for its agent); any other bare word is a host name. A target
 * given twice is provisioned once.
 */
export async function resolveTargets(
  specs: readonly string[],
  storeDir: string | undefined,
): Promise<ProvisionTarget[]> {
  const targets: ProvisionTarget[] = [];
  for (const spec of new Set(specs)) {
    const system = await systemNamed(spec, storeDir);
    if (system === undefined) {
      targets.push({ label: spec, ssh: parseSshAddress(spec, DEFAULT_USER) });
      continue;
    }
    if (!system.address)
      throw new ImgctlError('USAGE', `system '${spec}' has no address to reach it over SSH`, {
        hint: `imgctl system set ${spec} address=root@HOST, or give the target as [user@]host[:port]`,
      });
    targets.push({
      label: spec,
      ssh: parseSshAddress(system.address, DEFAULT_USER),
      system: spec,
    });
  }
  return targets;
}

/** The system a bare-word target names, when the store has one by that name. */
async function systemNamed(spec: string, storeDir: string | undefined) {
  const bare = !/[@:[]/.test(spec);
  if (!bare || storeDir === undefined || !isValidName(spec)) return undefined;
  if (!(await exists(storePaths.systemFile(storeDir, spec)))) return undefined;
  return showSystem(storeDir, spec);
}

/**
 * The server URL the targets' agents are given: `given` (--server), else `fromEnv`
 * ($IMGCTL_SERVER), else store.yaml's `server.url`. USAGE when there is none or it is not an
 * http(s) URL.
 */
export async function resolveServerUrl(options: {
  given?: string;
  fromEnv?: string;
  storeDir?: string;
}): Promise<string> {
  const { given, fromEnv, storeDir } = options;
  const server =
    given ??
    fromEnv ??
    (storeDir === undefined ? undefined : (await loadStoreConfig(storeDir)).server?.url);
  if (server === undefined)
    throw new ImgctlError('USAGE', 'no server: give --server URL (as the targets reach it)', {
      hint: "or set $IMGCTL_SERVER, or server.url in store.yaml (e.g. 'imgctl serve' on 0.0.0.0:8460)",
    });
  return checkServerUrl(server);
}

/**
 * An image reference as every target of one run gets it: a channel (web@stable) pinned to the
 * release it points at now (web@3), from the local store when there is one, else from the
 * server; anything else as given. A channel moved during a rollout then cannot leave the
 * targets on different releases.
 */
export async function pinImageRef(
  image: string,
  from: { storeDir?: string; server: string; token?: string },
): Promise<string> {
  const ref = parseImageRef(image);
  if (ref.channel === undefined) return image;
  if (from.storeDir !== undefined) {
    const resolved = await resolveImageRef(from.storeDir, image);
    return `${resolved.name}@${resolved.release!.revision}`;
  }
  const client = createClient({ baseUrl: from.server, token: from.token, retries: 1 });
  return `${ref.name}@${(await client.getImage(image)).image.revision}`;
}
