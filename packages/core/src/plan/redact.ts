/**
 * Documents as shown (imgctl image/record/system show, the server's images, records and
 * systems): the values of secret parameters (`secret: true` in the image) replaced by
 * `<redacted>`. design.md §3: a secret is never printed. A machine gets its secrets in the plan
 * alone (redactPlan for everyone without a token).
 */
import { type ImageDetails, loadImage, showImage } from '../store/images.ts';
import { showRecord } from '../store/records.ts';
import { findSystem, showSystem } from '../store/systems.ts';
import { REDACTED } from './plan.ts';
import type { ImageDoc, ImageRecordDoc, SystemDoc } from '../store/types.ts';

/** showImage, the defaults of the image's secret parameters redacted. */
export async function showImageRedacted(storeDir: string, name: string): Promise<ImageDetails> {
  const shown = await showImage(storeDir, name);
  return { ...shown, image: imageForDisplay(shown.image) };
}

/** showRecord, the values the record gives secret parameters of its image redacted. */
export async function showRecordRedacted(
  storeDir: string,
  image: string,
  record: string,
): Promise<ImageRecordDoc> {
  return recordForDisplay(storeDir, await showRecord(storeDir, image, record));
}

/**
 * findSystem (by name, MAC or hostname), the values the system gives secret parameters of its
 * image redacted.
 */
export async function findSystemRedacted(storeDir: string, key: string): Promise<SystemDoc> {
  return systemForDisplay(storeDir, await findSystem(storeDir, key));
}

/** showSystem (by name only), the values it gives secret parameters of its image redacted. */
export async function showSystemRedacted(storeDir: string, name: string): Promise<SystemDoc> {
  return systemForDisplay(storeDir, await showSystem(storeDir, name));
}

/** The image's secret parameters; every parameter when the image cannot be read (unknowable). */
async function secretsOf(storeDir: string, image: string): Promise<Set<string> | 'all'> {
  try {
    return secretParameters(await loadImage(storeDir, image));
  } catch {
    return 'all';
  }
}

function secretParameters(image: ImageDoc): Set<string> {
  return new Set(
    Object.entries(image.parameters ?? {})
      .filter(([, p]) => p?.secret === true)
      .map(([name]) => name),
  );
}

function redacted(
  values: Record<string, unknown> | undefined,
  secrets: Set<string> | 'all',
): Record<string, unknown> | undefined {
  if (values === undefined || values === null || typeof values !== 'object') return values;
  return Object.fromEntries(
    Object.entries(values).map(([name, value]) => [
      name,
      secrets === 'all' || secrets.has(name) ? REDACTED : value,
    ]),
  );
}

function imageForDisplay(image: ImageDoc): ImageDoc {
  const secrets = secretParameters(image);
  if (secrets.size === 0) return image;
  const parameters = { ...image.parameters };
  for (const name of secrets)
    if (parameters[name]?.default !== undefined)
      parameters[name] = { ...parameters[name], default: REDACTED };
  return { ...image, parameters };
}

async function recordForDisplay(storeDir: string, record: ImageRecordDoc): Promise<ImageRecordDoc> {
  if (record.provision?.parameters === undefined) return record;
  const parameters = redacted(record.provision.parameters, await secretsOf(storeDir, record.image));
  return { ...record, provision: { ...record.provision, parameters } };
}

async function systemForDisplay(storeDir: string, system: SystemDoc): Promise<SystemDoc> {
  if (system.parameters === undefined) return system;
  return {
    ...system,
    parameters: redacted(system.parameters, await secretsOf(storeDir, system.image)),
  };
}
