/**
 * Resolution (design.md §3): image defaults < record < system < command line (--set) give the
 * plan, the single fully-resolved document the agent executes. docs/plan.md describes it.
 */
import { relative, resolve } from 'node:path';
import type { Problem } from '../yaml/document.ts';
import { ImgctlError } from '../util/errors.ts';
import { assertName } from '../util/names.ts';
import { exists, storePaths } from '../store/store.ts';
import { loadStoreConfig } from '../store/store-config.ts';
import {
  parseImageRef,
  refuseRevoked,
  type ResolvedImageRef,
  resolveImageRef,
} from '../store/releases.ts';
import {
  API_VERSION,
  type ImageDoc,
  type ImageRecordDoc,
  type ImageStoreDoc,
  type PlanDoc,
  type SystemDoc,
} from '../store/types.ts';
import { loadDocument } from '../validate/load.ts';
import { compact } from '../util/compact.ts';
import { resolveDevices, resolveDisks } from './disks-and-devices.ts';
import { resolveProvision } from './image-files.ts';
import { parseSets, resolveParameters, type ValueLayer } from './parameters.ts';
import { locateIn, planError } from './problems.ts';

export interface PlanRequest {
  /** NAME (the working image), NAME@REV (a release) or NAME@CHANNEL */
  image: string;
  /**
   * `image` already resolved (the server's, checked for links and revocation): used as is, so
   * a channel moved meanwhile cannot give the plan another tree than the one checked
   */
  resolved?: ResolvedImageRef;
  record?: string;
  system?: string;
  /** `--set` arguments, each `NAME=VALUE`; the last one for a name wins */
  sets?: string[];
  vmName?: string;
}

export const REDACTED = '<redacted>';

/**
 * Resolves the plan for `request`. Throws ImgctlError: NOT_FOUND for a missing image, release,
 * channel, record or system; INTEGRITY for a revoked release; VALIDATION for a system of another
 * image, an unknown, computed or non-customizable parameter set by a layer, a value of the
 * wrong type, a computed cycle, a shrinking disk; USAGE for a malformed --set, name or image
 * reference. A release is read from its frozen copy (store/releases.ts); the system and the
 * store's defaults from the store. Secrets are in the result: print `redactPlan(plan)`.
 */
export async function resolvePlan(storeDir: string, request: PlanRequest): Promise<PlanDoc> {
  const ref = request.resolved ?? (await resolveImageRef(storeDir, request.image));
  refuseRevoked(ref);
  const imageName = ref.name;
  const sets = parseSets(request.sets ?? []);
  const vmName = request.vmName === undefined ? undefined : assertName('VM', request.vmName);
  /** store-relative display path of a file of the image (in its release when it is one) */
  const shown = (file: string) => relative(storeDir, resolve(ref.root, file));

  const image = await loadDocument<ImageDoc>(
    'Image',
    storePaths.imageFile(ref.root, imageName),
    shown(storePaths.rel.imageFile(imageName)),
    { expectedName: imageName },
  );
  const system =
    request.system === undefined
      ? undefined
      : await loadDocument<SystemDoc>(
          'System',
          storePaths.systemFile(storeDir, request.system),
          storePaths.rel.systemFile(request.system),
          { expectedName: request.system },
        );
  if (system && parseImageRef(system.value.image).name !== imageName) {
    const { line, col } = locateIn(system.yaml, ['image']);
    throw new ImgctlError(
      'VALIDATION',
      `${system.yaml.file}:${line}:${col} image: system '${system.value.name}' runs image '${system.value.image}', not '${imageName}'`,
      { hint: `plan it with 'imgctl plan ${system.value.image} --system ${system.value.name}'` },
    );
  }
  const { defaults = {}, blob_mirrors } = await storeConfig(storeDir);
  const recordName = assertName(
    'record',
    request.record ?? system?.value.record ?? defaults.record ?? 'default',
  );
  const record = await loadDocument<ImageRecordDoc>(
    'ImageRecord',
    storePaths.recordFile(ref.root, imageName, recordName),
    shown(storePaths.rel.recordFile(imageName, recordName)),
    { expectedName: recordName, expectedImage: imageName },
  );

  const vm_name = vmName ?? system?.value.name ?? imageName;
  const hostname = system?.value.hostname ?? vm_name;
  const variables: Record<string, string> = {
    IMAGE_STORE: resolve(storeDir),
    IMAGE_NAME: imageName,
    VM_NAME: vm_name,
    SYSTEM_NAME: system?.value.name ?? '',
    HOSTNAME: hostname,
  };

  const problems: Problem[] = [];
  const layers: ValueLayer[] = [
    {
      layer: 'record',
      who: `the record '${recordName}'`,
      values: record.value.provision?.parameters ?? {},
      yaml: record.yaml,
      path: ['provision', 'parameters'],
    },
  ];
  if (system) {
    layers.push({
      layer: 'system',
      who: `the system '${system.value.name}'`,
      values: system.value.parameters ?? {},
      yaml: system.yaml,
      path: ['parameters'],
    });
  }
  layers.push({
    layer: 'command line',
    who: 'the command line',
    values: sets.values,
    path: [],
    args: sets.args,
  });

  const resolved = resolveParameters(image, layers, variables, problems);
  const disks = resolveDisks(image, record, problems);
  if (problems.length > 0) throw planError(imageName, problems);

  const devices = resolveDevices(
    image.value,
    record.value,
    system?.value,
    defaults.network ?? 'default',
  );
  const provision = await resolveProvision(ref.root, image.value);

  const plan: PlanDoc = {
    apiVersion: API_VERSION,
    kind: 'Plan',
    image: compact({
      name: imageName,
      revision: image.value.revision,
      ...releaseFields(ref),
      label: image.value.label,
      os: image.value.os,
      parent: image.value.parent,
    }),
    record: recordName,
    system: system?.value.name,
    vm_name,
    hostname,
    boot: image.value.boot,
    devices,
    disks,
    interfaces: system?.value.interfaces ?? [],
    ssh_authorized_keys: system?.value.ssh_authorized_keys ?? [],
    target_disk: system?.value.target_disk,
    parameters: resolved.values,
    parameter_sources: resolved.sources,
    secrets: resolved.secrets,
    variables,
    provision,
    requires: image.value.requires,
    health: image.value.health,
    blob_mirrors,
  };
  return compact(plan);
}

/** What a plan says of the release it was resolved from: `reference`, `release`, `deprecated`. */
function releaseFields(ref: ResolvedImageRef): Partial<PlanDoc['image']> {
  if (!ref.release) return {};
  const release = `${ref.name}@${ref.release.revision}`;
  const deprecated = ref.release.deprecated;
  return {
    ...(ref.ref === release ? {} : { reference: ref.ref }),
    release,
    ...(deprecated
      ? { deprecated: compact({ at: deprecated.at, reason: deprecated.reason }) }
      : {}),
  };
}

/** A copy of `plan` with the value of every secret parameter replaced by '<redacted>'. */
export function redactPlan(plan: PlanDoc): PlanDoc {
  const copy = structuredClone(plan);
  for (const name of copy.secrets) {
    if (Object.hasOwn(copy.parameters, name) && copy.parameters[name] !== null)
      copy.parameters[name] = REDACTED;
  }
  return copy;
}

async function storeConfig(storeDir: string): Promise<Partial<ImageStoreDoc>> {
  if (!(await exists(storePaths.storeFile(storeDir)))) return {};
  return loadStoreConfig(storeDir);
}
