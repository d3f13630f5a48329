/** The server URL as `imgctl provision` and `imgagent` take it. */
import { ImgctlError } from '../util/errors.ts';
import { printable } from '../util/names.ts';

/**
 * `url` when it is an http:// or https:// URL; USAGE otherwise. `source` says where it was
 * given (a flag, a variable, a file's field).
 */
export function checkServerUrl(url: string, source = '--server'): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ImgctlError('USAGE', `${source}: not a URL: '${printable(url)}'`, {
      hint: 'e.g. --server http://imgsrv:8460',
    });
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')
    throw new ImgctlError('USAGE', `${source}: only http:// and https:// URLs are supported`);
  return url;
}
