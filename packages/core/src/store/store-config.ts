/**
 * store.yaml, the store's own settings (docs/formats.md), read and validated in one place for
 * every reader: defaults, the server's address, the signing key.
 */
import { isAbsolute, resolve } from 'node:path';
import { loadDocument } from '../validate/load.ts';
import { STORE_FILE, storePaths } from './store.ts';
import type { ImageStoreDoc } from './types.ts';

/**
 * The store's store.yaml, validated. Throws NOT_FOUND when there is none and VALIDATION, with
 * every problem in `details`, when it is not valid.
 */
export async function loadStoreConfig(storeDir: string): Promise<ImageStoreDoc> {
  const { value } = await loadDocument<ImageStoreDoc>(
    'ImageStore',
    storePaths.storeFile(storeDir),
    STORE_FILE,
  );
  return value;
}

/** The absolute path of a key file store.yaml names: relative paths are from the store. */
export function storeKeyPath(storeDir: string, configured: string): string {
  return isAbsolute(configured) ? configured : resolve(storeDir, configured);
}

/** The absolute path of the private key plans are signed with, when store.yaml names one. */
export function signingKeyPath(storeDir: string, config: ImageStoreDoc): string | undefined {
  return config.signing_key === undefined ? undefined : storeKeyPath(storeDir, config.signing_key);
}
