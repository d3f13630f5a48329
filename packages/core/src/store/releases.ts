/**
 * Releases and channels (docs/releases.md). A release freezes an image revision as IMAGE@REV:
 * `releases/IMAGE/REV/` holds a store-shaped copy of what a plan of the image reads —
 * `images/IMAGE/` (descriptor, records, files), the store's `custom_scripts/SET/` it uses and
 * `common/` — plus `release.yaml` (who, when, the disk digests, every file's sha256, and later
 * its withdrawal). A plan of IMAGE@REV resolves against that copy, so an edit of the image
 * never changes a release. `releases/IMAGE/channels.yaml` points channel names at releases.
 */
import { createHash, randomBytes } from 'node:crypto';
import { cp, mkdir, readdir, readFile, rename, rm } from 'node:fs/promises';
import { hostname, userInfo } from 'node:os';
import { join } from 'node:path';
import { parseYaml, syncDirectory, writeFileAtomic } from '../yaml/document.ts';
import { editYamlText, stringifyYaml } from '../yaml/yaml-edit.ts';
import { ImgctlError } from '../util/errors.ts';
import { assertName, printable } from '../util/names.ts';
import { VERSION } from '../util/version.ts';
import { validateDocument } from '../validate/document.ts';
import { loadDocument } from '../validate/load.ts';
import { loadImage } from './images.ts';
import { withStoreLock } from './lock.ts';
import { exists, listNames, storePaths } from './store.ts';
import { API_VERSION, type ImageDoc } from './types.ts';

export interface Withdrawal {
  at: string;
  reason?: string;
  by?: string;
}

export interface ReleaseDoc {
  apiVersion: typeof API_VERSION;
  kind: 'Release';
  image: string;
  revision: number;
  parent?: string;
  created_at: string;
  created_by: string;
  disks: Record<string, string>;
  files: Record<string, string>;
  deprecated?: Withdrawal;
  revoked?: Withdrawal;
}

export interface ChannelsDoc {
  apiVersion: typeof API_VERSION;
  kind: 'Channels';
  image: string;
  channels: Record<string, number>;
}

export type ReleaseState = 'active' | 'deprecated' | 'revoked';

/** An image reference: NAME (the working image), NAME@REV (a release) or NAME@CHANNEL. */
export interface ImageRef {
  name: string;
  revision?: number;
  channel?: string;
}

const CHANNEL = /^[a-z][a-z0-9._-]{0,62}$/;

export const releasePaths = {
  imageDir: (storeDir: string, image: string) =>
    join(storeDir, 'releases', assertName('image', image)),
  releaseDir: (storeDir: string, image: string, revision: number) =>
    join(releasePaths.imageDir(storeDir, image), String(revision)),
  releaseFile: (storeDir: string, image: string, revision: number) =>
    join(releasePaths.releaseDir(storeDir, image, revision), 'release.yaml'),
  channelsFile: (storeDir: string, image: string) =>
    join(releasePaths.imageDir(storeDir, image), 'channels.yaml'),
  rel: {
    releaseFile: (image: string, revision: number) => `releases/${image}/${revision}/release.yaml`,
    channelsFile: (image: string) => `releases/${image}/channels.yaml`,
  },
};

/** Parses NAME, NAME@REV or NAME@CHANNEL; USAGE when it is none of them. */
export function parseImageRef(text: string): ImageRef {
  const at = text.indexOf('@');
  const name = assertName('image', at < 0 ? text : text.slice(0, at));
  if (at < 0) return { name };
  const tail = text.slice(at + 1);
  if (/^[1-9][0-9]{0,8}$/.test(tail)) return { name, revision: Number(tail) };
  if (CHANNEL.test(tail)) return { name, channel: tail };
  throw new ImgctlError('USAGE', `invalid image reference '${printable(text)}'`, {
    hint: 'an image is NAME, NAME@REVISION (a release, e.g. web@3) or NAME@CHANNEL (e.g. web@stable)',
  });
}

export function releaseState(release: ReleaseDoc): ReleaseState {
  return release.revoked ? 'revoked' : release.deprecated ? 'deprecated' : 'active';
}

/** What an image reference stands for, and where a plan of it reads the image from. */
export interface ResolvedImageRef {
  /** what was asked for, e.g. web@stable */
  ref: string;
  name: string;
  /** the release, for NAME@REV and NAME@CHANNEL (its `revision` is the image revision) */
  release?: ReleaseDoc;
  /** the directory that holds images/NAME/ (the store, or the release's copy) */
  root: string;
}

/**
 * Resolves a reference: NAME is the working image in the store (not read here: whoever reads it
 * says when it is missing); NAME@CHANNEL the release the channel points at; NAME@REV that
 * release. NOT_FOUND for a release or channel that does not exist. A revoked release resolves
 * too: refusing it is the caller's (see refuseRevoked).
 */
export async function resolveImageRef(storeDir: string, text: string): Promise<ResolvedImageRef> {
  const ref = parseImageRef(text);
  if (ref.revision === undefined && ref.channel === undefined)
    return { ref: text, name: ref.name, root: storeDir };
  let revision = ref.revision;
  if (revision === undefined) {
    const channels = await readChannels(storeDir, ref.name);
    revision = channels[ref.channel!];
    if (revision === undefined)
      throw new ImgctlError('NOT_FOUND', `image '${ref.name}' has no channel '${ref.channel}'`, {
        hint: `'imgctl channel list ${ref.name}' lists its channels`,
      });
  }
  const release = await loadRelease(storeDir, ref.name, revision);
  return {
    ref: text,
    name: ref.name,
    release,
    root: releasePaths.releaseDir(storeDir, ref.name, revision),
  };
}

/** INTEGRITY (exit 7) for a revoked release, with when and why. */
export function refuseRevoked(resolved: ResolvedImageRef): void {
  const revoked = resolved.release?.revoked;
  if (!revoked) return;
  const what = `${resolved.name}@${resolved.release!.revision}`;
  throw new ImgctlError(
    'INTEGRITY',
    `${what}${resolved.ref === what ? '' : ` (${resolved.ref})`} is revoked since ${revoked.at}${revoked.reason ? `: ${revoked.reason}` : ''}`,
    { hint: `'imgctl image history ${resolved.name}' shows the releases that are not` },
  );
}

export async function loadRelease(
  storeDir: string,
  image: string,
  revision: number,
): Promise<ReleaseDoc> {
  const { value } = await loadDocument<ReleaseDoc>(
    'Release',
    releasePaths.releaseFile(storeDir, image, revision),
    releasePaths.rel.releaseFile(image, revision),
  );
  if (value.image !== image || value.revision !== revision)
    throw new ImgctlError(
      'VALIDATION',
      `${releasePaths.rel.releaseFile(image, revision)} says it is ${value.image}@${value.revision}`,
    );
  return value;
}

/** The channels of an image (none when it has no channels.yaml). */
export async function readChannels(
  storeDir: string,
  image: string,
): Promise<Record<string, number>> {
  const file = releasePaths.channelsFile(storeDir, image);
  if (!(await exists(file))) return {};
  const { value } = await loadDocument<ChannelsDoc>(
    'Channels',
    file,
    releasePaths.rel.channelsFile(image),
  );
  return value.channels;
}

export interface ReleaseInfo extends ReleaseDoc {
  state: ReleaseState;
  /** the channels that point at it */
  channels: string[];
}

/** The releases of an image, oldest first, with their state and channels. */
export async function listReleases(storeDir: string, image: string): Promise<ReleaseInfo[]> {
  assertName('image', image);
  const revisions = (await listNames(releasePaths.imageDir(storeDir, image), 'dirs'))
    .filter((n) => /^[1-9][0-9]*$/.test(n))
    .map(Number)
    .sort((a, b) => a - b);
  if (revisions.length === 0 && !(await exists(storePaths.imageDir(storeDir, image))))
    await loadImage(storeDir, image); // NOT_FOUND, as for any missing image
  const channels = await readChannels(storeDir, image);
  const releases = await Promise.all(revisions.map((r) => loadRelease(storeDir, image, r)));
  return releases.map((r) => ({
    ...r,
    state: releaseState(r),
    channels: Object.keys(channels)
      .filter((c) => channels[c] === r.revision)
      .sort(),
  }));
}

export interface CreateReleaseOptions {
  /** channels to point at the new release */
  channels?: string[];
  now?: Date;
}

export interface CreateReleaseResult {
  release: ReleaseDoc;
  ref: string;
  channels: string[];
}

/**
 * Freezes the image's working revision as IMAGE@REV. CONFLICT when that release exists;
 * VALIDATION when a disk has no content yet (nothing to provision) or a script set is missing.
 * The copy is made under .state/ and renamed into place: a crash leaves all of it or nothing.
 */
export async function createRelease(
  storeDir: string,
  name: string,
  options: CreateReleaseOptions = {},
): Promise<CreateReleaseResult> {
  const channels = (options.channels ?? []).map(assertChannel);
  return withStoreLock(storeDir, async () => {
    const image = await loadImage(storeDir, name);
    const ref = `${name}@${image.revision}`;
    const target = releasePaths.releaseDir(storeDir, name, image.revision);
    if (await exists(target))
      throw new ImgctlError('CONFLICT', `${ref} is already released`, {
        hint: `change the image first (its revision goes up), then release again; 'imgctl image history ${name}' lists the releases`,
      });
    const disks: Record<string, string> = {};
    for (const disk of image.disks) {
      if (disk.use === 'scratch') continue;
      if (!disk.sha256)
        throw new ImgctlError('VALIDATION', `disk '${disk.id}' of ${name} has no content yet`, {
          hint: `add it with 'imgctl disk add ${name} FILE --id ${disk.id}' or 'imgctl build ${name}', then release`,
        });
      if (disk.blob && !(await exists(storePaths.blobFile(storeDir, disk.sha256))))
        throw new ImgctlError('INTEGRITY', `the blob of disk '${disk.id}' of ${name} is missing`, {
          hint: "'imgctl verify' checks the store's blobs",
        });
      disks[disk.id] = disk.sha256;
    }
    const tmp = join(storeDir, '.state', `new-release-${name}-${randomBytes(4).toString('hex')}`);
    await mkdir(tmp, { recursive: true });
    try {
      await copyImageTree(storeDir, name, image, tmp);
      const release: ReleaseDoc = {
        apiVersion: API_VERSION,
        kind: 'Release',
        image: name,
        revision: image.revision,
        ...(image.parent ? { parent: image.parent } : {}),
        created_at: (options.now ?? new Date()).toISOString(),
        created_by: `${whoAmI()} (imgctl ${VERSION})`,
        disks,
        files: await hashTree(tmp),
      };
      await writeFileAtomic(join(tmp, 'release.yaml'), stringifyYaml(release));
      await mkdir(releasePaths.imageDir(storeDir, name), { recursive: true });
      await rename(tmp, target);
      await syncDirectory(releasePaths.imageDir(storeDir, name));
      for (const channel of channels)
        await writeChannel(storeDir, name, channel, image.revision, release);
      return { release, ref, channels };
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  });
}

/** images/NAME/, the store's custom script sets it uses, and common/, copied into `root`. */
async function copyImageTree(
  storeDir: string,
  name: string,
  image: ImageDoc,
  root: string,
): Promise<void> {
  const source = storePaths.imageDir(storeDir, name);
  await refuseSymlinks(source, `images/${name}`);
  await cp(source, join(root, 'images', name), { recursive: true });
  for (const set of image.provision?.custom_scripts ?? []) {
    if (await exists(join(source, 'custom_scripts', set))) continue;
    const shared = join(storeDir, 'custom_scripts', assertName('custom script set', set));
    if (!(await exists(shared)))
      throw new ImgctlError('VALIDATION', `custom script set '${set}' of ${name} does not exist`, {
        hint: `'imgctl image validate' shows what the image lacks`,
      });
    await refuseSymlinks(shared, `custom_scripts/${set}`);
    await cp(shared, join(root, 'custom_scripts', set), { recursive: true });
  }
  const common = join(storeDir, 'common');
  if (await exists(common)) {
    await refuseSymlinks(common, 'common');
    await cp(common, join(root, 'common'), { recursive: true });
  }
}

/** A release holds plain files only: a symlink could point anywhere, now or later. */
async function refuseSymlinks(dir: string, display: string): Promise<void> {
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isSymbolicLink() || (!entry.isFile() && !entry.isDirectory()))
      throw new ImgctlError(
        'VALIDATION',
        `${display}/${join(entry.parentPath, entry.name).slice(dir.length + 1)} is not a regular file`,
        { hint: 'a release copies regular files only: replace the link by the file' },
      );
  }
}

/** The sha256 of every file under `root`, by path relative to it, sorted. */
async function hashTree(root: string): Promise<Record<string, string>> {
  const files: Record<string, string> = {};
  const entries = await readdir(root, { recursive: true, withFileTypes: true });
  const paths = entries
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name).slice(root.length + 1))
    .sort();
  for (const path of paths)
    files[path] = createHash('sha256')
      .update(await readFile(join(root, path)))
      .digest('hex');
  return files;
}

/** Files of a release whose content is not what release.yaml recorded (or that were added). */
export async function changedReleaseFiles(
  storeDir: string,
  release: ReleaseDoc,
): Promise<string[]> {
  const dir = releasePaths.releaseDir(storeDir, release.image, release.revision);
  const now = await hashTree(dir);
  delete now['release.yaml'];
  const paths = new Set([...Object.keys(now), ...Object.keys(release.files)]);
  return [...paths].filter((p) => now[p] !== release.files[p]).sort();
}

function assertChannel(channel: string): string {
  if (!CHANNEL.test(channel))
    throw new ImgctlError('USAGE', `invalid channel name '${printable(channel)}'`, {
      hint: "a channel is a letter, then a-z, 0-9, '.', '_' or '-' (e.g. stable)",
    });
  return channel;
}

function whoAmI(): string {
  let user = process.env.USER ?? 'unknown';
  try {
    user = userInfo().username;
  } catch {
    // no passwd entry (a container): $USER
  }
  return `${user}@${hostname()}`;
}

export interface ChannelResult {
  image: string;
  channel: string;
  revision: number;
  /** where it pointed before, when it existed */
  previous?: number;
}

/** Points `channel` of `image` at release `revision`; CONFLICT for a revoked release. */
export async function setChannel(
  storeDir: string,
  image: string,
  channel: string,
  revision: number,
): Promise<ChannelResult> {
  assertChannel(channel);
  return withStoreLock(storeDir, async () => {
    const release = await loadRelease(storeDir, image, revision).catch((error: unknown) => {
      if (error instanceof ImgctlError && error.code === 'NOT_FOUND')
        throw new ImgctlError('NOT_FOUND', `${image}@${revision} is not a release`, {
          hint: `'imgctl release create ${image}' makes one; 'imgctl image history ${image}' lists them`,
        });
      throw error;
    });
    const previous = (await readChannels(storeDir, image))[channel];
    await writeChannel(storeDir, image, channel, revision, release);
    return { image, channel, revision, ...(previous === undefined ? {} : { previous }) };
  });
}

/** Writes one channel into channels.yaml (created when absent, comments kept), under the lock. */
async function writeChannel(
  storeDir: string,
  image: string,
  channel: string,
  revision: number,
  release: ReleaseDoc,
): Promise<void> {
  if (release.revoked)
    throw new ImgctlError(
      'CONFLICT',
      `${image}@${revision} is revoked: channel '${channel}' cannot point at it`,
      { hint: `'imgctl image history ${image}' shows the releases that are not` },
    );
  const file = releasePaths.channelsFile(storeDir, image);
  const display = releasePaths.rel.channelsFile(image);
  const text = (await exists(file))
    ? editYamlText(await readFile(file, 'utf8'), [{ path: ['channels', channel], value: revision }])
    : stringifyYaml({
        apiVersion: API_VERSION,
        kind: 'Channels',
        image,
        channels: { [channel]: revision },
      });
  const problems = validateDocument('Channels', parseYaml(display, text));
  if (problems.length > 0)
    throw new ImgctlError('VALIDATION', `${display} would not be valid`, {
      details: problems.map((p) => `${p.line}:${p.col} ${p.message}`),
    });
  await writeFileAtomic(file, text);
}

export type WithdrawAction = 'deprecate' | 'revoke';

/**
 * Deprecates or revokes a release, recording when, why and by whom. A revoked release cannot be
 * deprecated; revoking one a channel points at is refused (CONFLICT: move the channel first).
 */
export async function withdrawRelease(
  storeDir: string,
  refText: string,
  action: WithdrawAction,
  options: { reason?: string; now?: Date } = {},
): Promise<ReleaseDoc> {
  const ref = parseImageRef(refText);
  if (ref.revision === undefined)
    throw new ImgctlError('USAGE', `${action} takes a release: IMAGE@REVISION, e.g. web@3`);
  return withStoreLock(storeDir, async () => {
    const release = await loadRelease(storeDir, ref.name, ref.revision!);
    const what = `${ref.name}@${ref.revision}`;
    if (release.revoked)
      throw new ImgctlError('CONFLICT', `${what} is already revoked (${release.revoked.at})`);
    if (action === 'deprecate' && release.deprecated)
      throw new ImgctlError('CONFLICT', `${what} is already deprecated (${release.deprecated.at})`);
    if (action === 'revoke') {
      const channels = await readChannels(storeDir, ref.name);
      const pointing = Object.keys(channels).filter((c) => channels[c] === ref.revision);
      if (pointing.length > 0)
        throw new ImgctlError(
          'CONFLICT',
          `channel${pointing.length > 1 ? 's' : ''} ${pointing.join(', ')} of ${ref.name} point${pointing.length > 1 ? '' : 's'} at ${what}`,
          {
            hint: `move ${pointing.length > 1 ? 'them' : 'it'} first: imgctl channel set ${ref.name} ${pointing[0]} REVISION`,
          },
        );
    }
    const entry: Withdrawal = {
      at: (options.now ?? new Date()).toISOString(),
      ...(options.reason ? { reason: options.reason } : {}),
      by: whoAmI(),
    };
    const file = releasePaths.releaseFile(storeDir, ref.name, ref.revision!);
    const key = action === 'revoke' ? 'revoked' : 'deprecated';
    await writeFileAtomic(
      file,
      editYamlText(await readFile(file, 'utf8'), [{ path: [key], value: entry }]),
    );
    return { ...release, [key]: entry };
  });
}

/**
 * The blobs only revoked releases name — no other release, no working image — each with the
 * release that withdrew it, as `web@3 (revoked at …: reason)`. The server no longer serves
 * them, as Glance does not serve a deactivated image's data.
 */
export async function revokedOnlyBlobs(storeDir: string): Promise<Map<string, string>> {
  const revoked = new Map<string, string>();
  const live = new Set<string>();
  for (const image of await listNames(join(storeDir, 'releases'), 'dirs')) {
    // a release that cannot be read withdraws nothing (imgctl verify reports it)
    const releases = await listReleases(storeDir, image).catch(() => []);
    for (const r of releases)
      for (const sha of Object.values(r.disks)) {
        if (!r.revoked) live.add(sha);
        else if (!revoked.has(sha))
          revoked.set(
            sha,
            `${image}@${r.revision} (revoked at ${r.revoked.at}${r.revoked.reason ? `: ${r.revoked.reason}` : ''})`,
          );
      }
  }
  if (revoked.size === 0) return revoked;
  for (const image of await listNames(storePaths.imagesDir(storeDir), 'dirs')) {
    const text = await readFile(storePaths.imageFile(storeDir, image), 'utf8').catch(() => '');
    for (const sha of revoked.keys()) if (text.includes(sha)) live.add(sha);
  }
  for (const sha of live) revoked.delete(sha);
  return revoked;
}
