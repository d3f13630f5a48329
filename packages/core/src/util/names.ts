import { ImgctlError } from './errors.ts';

/** Names of images, records, systems and VMs: they become path segments, so nothing else passes. */
const NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;

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

/**
 * `text` with its control characters (C0, DEL, C1: a terminal's escape sequences, a forged line)
 * shown as \xNN; for what another machine sent (an agent's lines and messages) before it is
 * printed on an operator's terminal.
 */
export function terminalSafe(text: string): string {
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  return text.replace(/[\x00-\x1f\x7f-\x9f]/g, hexEscape);
}

const hexEscape = (c: string) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`;

/** Makes user input safe to echo in one line of an error message. */
export function printable(text: string): string {
  const clipped = text.length > 80 ? `${text.slice(0, 80)}…` : text;
  return clipped.replace(/[^\x20-\x7e]/g, hexEscape);
}

/** A camelCase option name as its flag: `replaceSelf` → `replace-self`. */
export function kebab(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}
