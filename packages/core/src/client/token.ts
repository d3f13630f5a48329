/**
 * Token files, read by one rule for every binary: `imgctl serve --read-token-file` and
 * `--write-token-file`, `imgctl provision --token-file`, `imgagent --token-file`.
 */
import { readFile } from 'node:fs/promises';
import { ImgctlError } from '../util/errors.ts';

const TOKEN = /^[\x21-\x7e]{16,4096}$/;
const TOKEN_HINT = 'make one with: openssl rand -hex 32 > FILE';

/**
 * The token a file holds: one line of 16 to 4096 printable characters (no spaces), surrounding
 * whitespace (a trailing newline) ignored. NOT_FOUND when the file cannot be read, USAGE
 * when it holds anything else; the messages name the flag and the file, never the content.
 */
export async function readTokenFile(file: string, flag = 'token file'): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code ?? String(error);
    throw new ImgctlError('NOT_FOUND', `${flag} ${file} cannot be read (${reason})`, {
      cause: error,
    });
  }
  const token = text.trim();
  if (TOKEN.test(token)) return token;
  const problem =
    token === ''
      ? 'is empty'
      : /\s/.test(token)
        ? 'holds more than one word or line'
        : token.length < 16 || token.length > 4096
          ? `holds ${token.length} characters`
          : 'holds characters other than printable ASCII';
  throw new ImgctlError(
    'USAGE',
    `${flag} ${file} ${problem}: it must hold one token of 16 to 4096 printable characters`,
    { hint: TOKEN_HINT },
  );
}
