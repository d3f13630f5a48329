/**
 * Staging files into an initramfs: the kernel unpacks every cpio archive of the initrd in turn
 * (docs: the kernel's "initramfs buffer format"), so one more uncompressed newc archive
 * appended to a copy of the provisioning ramdisk's initrd puts files into it without unpacking
 * or recompressing anything, and without a cpio program on the host. `imgagent --replace-self
 * --via-ramdisk` stages its instructions this way before it switches with kexec.
 */
import { open } from 'node:fs/promises';

export interface StagedFile {
  /** relative, e.g. `imgctl/instructions`; its directories are made (0700) */
  path: string;
  content: string | Uint8Array;
  mode: number;
}

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
/** a fixed time: the same files stage the same bytes */
const MTIME = 0;

/** The newc archive of `files` (with their directories), ending with its trailer. */
export function newcArchive(files: StagedFile[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  const dirs = new Set<string>();
  const entry = (name: string, mode: number, data: Buffer) => {
    const fields = [ino++, mode, 0, 0, mode & S_IFDIR ? 2 : 1, MTIME, data.length, 0, 0, 0, 0];
    const nameBytes = Buffer.from(`${name}\0`);
    const header = `070701${fields.map(hex8).join('')}${hex8(nameBytes.length)}${hex8(0)}`;
    parts.push(pad(Buffer.concat([Buffer.from(header, 'ascii'), nameBytes])), pad(data));
  };
  for (const file of files) {
    if (!/^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/.test(file.path) || file.path.includes('..'))
      throw new Error(`not a path to stage: ${file.path}`);
    const segments = file.path.split('/');
    for (let i = 1; i < segments.length; i++) {
      const dir = segments.slice(0, i).join('/');
      if (!dirs.has(dir)) entry(dir, S_IFDIR | 0o700, Buffer.alloc(0));
      dirs.add(dir);
    }
    entry(file.path, S_IFREG | (file.mode & 0o777), Buffer.from(file.content));
  }
  entry('TRAILER!!!', 0, Buffer.alloc(0));
  return Buffer.concat(parts);
}

/**
 * Writes `initrd` followed by the archive of `files` to `out` (mode 0600: the instructions hold
 * a token), fsynced. The initrd is padded to 4 bytes first: each archive starts aligned.
 */
export async function stageIntoInitrd(
  initrd: Uint8Array,
  files: StagedFile[],
  out: string,
): Promise<void> {
  const handle = await open(out, 'w', 0o600);
  try {
    await handle.writeFile(initrd);
    await handle.writeFile(Buffer.alloc((4 - (initrd.length % 4)) % 4));
    await handle.writeFile(newcArchive(files));
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function hex8(n: number): string {
  return n.toString(16).padStart(8, '0');
}

function pad(b: Buffer): Buffer {
  const rest = (4 - (b.length % 4)) % 4;
  return rest === 0 ? b : Buffer.concat([b, Buffer.alloc(rest)]);
}
