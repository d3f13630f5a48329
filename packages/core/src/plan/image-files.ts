/** An image's provisioning files: which ones a plan runs, and the kickstart rendered for a plan. */
import { readFile, realpath } from 'node:fs/promises';
import { join, relative, resolve, sep } from 'node:path';
import { ImgctlError } from '../util/errors.ts';
import { printable } from '../util/names.ts';
import { releasePaths } from '../store/releases.ts';
import { exists, storePaths } from '../store/store.ts';
import { renderTemplate } from '../template/template.ts';
import type { ImageDoc, PlanDoc } from '../store/types.ts';
import { compact } from '../util/compact.ts';

/** Extra names a rendered image file (the kickstart) sees. */
export const FILE_CONTEXT_NAMES = ['system', 'disks', 'devices'] as const;

export type ImageFileKind = 'kickstart';

/**
 * Renders an image's file for a plan: the kickstart (`provision.kickstart`, else `kickstart.ks`).
 * The template sees every parameter, the template variables, `system` (name, hostname,
 * interfaces, ssh_authorized_keys), `disks` and `devices`. Pass the unredacted plan: secrets are
 * rendered in, since the file is the machine's configuration.
 */
export async function renderImageFile(
  storeDir: string,
  plan: PlanDoc,
  kind: ImageFileKind,
): Promise<string> {
  if (kind !== 'kickstart')
    throw new ImgctlError('USAGE', `cannot render '${printable(String(kind))}'`);
  // a release's files are its frozen copies
  const root = plan.image.release
    ? releasePaths.releaseDir(storeDir, plan.image.name, plan.image.revision)
    : storeDir;
  const imageDir = storePaths.imageDir(root, plan.image.name);
  const file = plan.provision.kickstart ?? 'kickstart.ks';
  const abs = resolve(imageDir, file);
  const display = `${relative(storeDir, imageDir)}/${file}`;
  if (!abs.startsWith(imageDir + sep)) {
    throw new ImgctlError(
      'VALIDATION',
      `${storePaths.rel.imageFile(plan.image.name)}: provision.kickstart '${printable(file)}' is outside the image`,
    );
  }
  let source: string;
  try {
    // A symlink must not lead a kickstart out of the image either.
    const [realDir, realFile] = await Promise.all([realpath(imageDir), realpath(abs)]);
    if (!realFile.startsWith(realDir + sep)) {
      throw new ImgctlError(
        'VALIDATION',
        `${display} leads outside images/${plan.image.name}/ (a symlink); templates are read from the image only`,
      );
    }
    source = await readFile(realFile, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new ImgctlError(
        'NOT_FOUND',
        `image '${plan.image.name}' has no kickstart (${display} does not exist)`,
        {
          hint: `write ${display}, or set provision.kickstart in ${storePaths.rel.imageFile(plan.image.name)}`,
        },
      );
    }
    throw error;
  }
  return renderTemplate(source, fileContext(plan), { name: display });
}

function fileContext(plan: PlanDoc): Record<string, unknown> {
  return {
    ...plan.parameters,
    ...plan.variables,
    system: {
      name: plan.system ?? '',
      hostname: plan.hostname,
      interfaces: plan.interfaces,
      ssh_authorized_keys: plan.ssh_authorized_keys,
    },
    disks: plan.disks,
    devices: plan.devices,
  };
}

/** The provisioning files: those named in the image, else the conventional ones that exist. */
export async function resolveProvision(
  storeDir: string,
  image: ImageDoc,
): Promise<PlanDoc['provision']> {
  const dir = storePaths.imageDir(storeDir, image.name);
  const script =
    image.provision?.script ??
    ((await exists(join(dir, 'provision.sh'))) ? 'provision.sh' : undefined);
  const kickstart =
    image.provision?.kickstart ??
    ((await exists(join(dir, 'kickstart.ks'))) ? 'kickstart.ks' : undefined);
  return compact({ script, custom_scripts: image.provision?.custom_scripts ?? [], kickstart });
}
