/** The sha256 of what a file holds so far, kept open: a resumed download goes on hashing. */
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';

const READ_CHUNK = 4 * 1024 * 1024;

/** The hash of `path`'s bytes (not digested) and their count; an empty hash when it is missing. */
export async function hashFile(path: string): Promise<{ hash: Hash; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  try {
    await stat(path);
  } catch {
    return { hash, size };
  }
  for await (const chunk of createReadStream(path, { highWaterMark: READ_CHUNK })) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { hash, size };
}
