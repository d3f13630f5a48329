import type { Result } from './command.ts';
import type { Io } from './io.ts';

export function renderResult(io: Io, json: boolean, result: Result): void {
  if (json) io.stdout.write(`${JSON.stringify(result.data, null, 2)}\n`);
  else if (result.text !== '')
    io.stdout.write(result.text.endsWith('\n') ? result.text : `${result.text}\n`);
}
