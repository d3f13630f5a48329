import { ImgctlError } from './errors.ts';

/** Names of images, records, systems and VMs: they become path segments, so nothing else passes. */
export const NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;

export function isValidName(name: string): boolean {
  return NAME_PATTERN.test(name) && name !== '.' && name !== '..' && !name.includes('..');
}

export function assertName(kind: string, name: string): string {
  if (!isValidName(name)) {
    throw new ImgctlError('USAGE', `invalid ${kind} name '${printable(name)}'`, {
      hint: 'names are 1-63 characters of a-z, 0-9, ".", "_" and "-", starting with a letter or digit, without ".."',
    });
  }
  return name;
}

/** Makes user input safe to echo in one line of an error message. */
export function printable(text: string): string {
  const clipped = text.length > 80 ? `${text.slice(0, 80)}…` : text;
  return clipped.replace(
    /[^\x20-\x7e]/g,
    (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`,
  );
}
