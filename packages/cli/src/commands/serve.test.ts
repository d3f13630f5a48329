import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { configuredListen } from './serve.ts';

let store: string;
beforeEach(async () => {
  store = await mkdtemp(join(tmpdir(), 'imgctl-serve-'));
});
afterEach(async () => {
  await rm(store, { recursive: true, force: true });
});

const HEADER = 'apiVersion: imgctl/v1\nkind: ImageStore\nname: lab\n';

async function listenOf(storeYaml: string): Promise<string | undefined> {
  await writeFile(join(store, 'store.yaml'), storeYaml);
  return configuredListen(store);
}

describe("serve's address from store.yaml", () => {
  it('is server.listen, also when another field of store.yaml is not valid', async () => {
    expect(await listenOf(`${HEADER}server:\n  listen: 0.0.0.0:9000\n`)).toBe('0.0.0.0:9000');
    expect(await listenOf(`${HEADER}bogus: 1\nserver:\n  listen: 0.0.0.0:9000\n`)).toBe(
      '0.0.0.0:9000',
    );
    expect(await listenOf(`${HEADER}server:\n  listen: 9000\n`)).toBe('9000');
  });

  it('is none when store.yaml names none or cannot be parsed', async () => {
    expect(await listenOf(HEADER)).toBeUndefined();
    expect(await listenOf(`${HEADER}server:\n  listen: [0.0.0.0:9000\n`)).toBeUndefined();
    expect(await listenOf('')).toBeUndefined();
  });
});
