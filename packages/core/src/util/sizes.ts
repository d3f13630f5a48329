import { ImgctlError } from './errors.ts';

const UNITS: Record<string, number> = {
  '': 1,
  B: 1,
  KiB: 1024,
  MiB: 1024 ** 2,
  GiB: 1024 ** 3,
  TiB: 1024 ** 4,
  KB: 1000,
  MB: 1000 ** 2,
  GB: 1000 ** 3,
  TB: 1000 ** 4,
};

/** The pattern the schemas use for sizes written as strings. */
export const SIZE_PATTERN = '^[0-9]+(\\.[0-9]+)?(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB)?$';
const SIZE_RE = new RegExp(SIZE_PATTERN);

/** Bytes of a size written `512MiB`, `1.5GiB`, `4GB` or as a byte count. */
export function parseSize(size: string | number): number {
  if (typeof size === 'number') {
    if (Number.isSafeInteger(size) && size >= 0) return size;
  } else {
    const text = size.trim();
    if (SIZE_RE.test(text)) {
      const unit = text.replace(/^[0-9.]+/, '');
      const bytes = Math.round(Number.parseFloat(text) * (UNITS[unit] ?? Number.NaN));
      if (Number.isSafeInteger(bytes)) return bytes;
    }
  }
  throw new ImgctlError('VALIDATION', `invalid size '${String(size)}'`, {
    hint: 'write sizes as 512MiB, 2GiB, 4GB or a number of bytes',
  });
}

/** The shortest exact binary-unit spelling: 536870912 → 512MiB, 1000 → 1000. */
export function formatSize(bytes: number): string {
  for (const unit of ['TiB', 'GiB', 'MiB', 'KiB'] as const) {
    const factor = UNITS[unit]!;
    if (bytes >= factor && bytes % factor === 0) return `${bytes / factor}${unit}`;
  }
  return String(bytes);
}

/** 1.5GiB, 12MiB, 300KiB: rounded, for progress and messages. */
export function humanSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes}B` : `${value.toFixed(value < 10 ? 1 : 0)}${units[unit]}`;
}
