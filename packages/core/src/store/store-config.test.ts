import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadStoreConfig, signingKeyPath } from './store-config.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function storeWith(storeYaml?: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'imgctl-store-config-'));
  dirs.push(dir);
  if (storeYaml !== undefined) writeFileSync(join(dir, 'store.yaml'), storeYaml);
  return dir;
}

const HEADER = 'apiVersion: imgctl/v1\nkind: ImageStore\nname: lab\n';

describe('loadStoreConfig', () => {
  it('returns store.yaml and where its signing key is', async () => {
    const dir = storeWith(`${HEADER}signing_key: keys/plan.key\nserver:\n  url: http://x:8460\n`);
    const config = await loadStoreConfig(dir);
    expect(config.name).toBe('lab');
    expect(config.server?.url).toBe('http://x:8460');
    expect(signingKeyPath(dir, config)).toBe(join(dir, 'keys/plan.key'));
    expect(signingKeyPath(dir, { ...config, signing_key: '/etc/k' })).toBe('/etc/k');
    expect(signingKeyPath(dir, { ...config, signing_key: undefined })).toBeUndefined();
  });

  it('refuses a missing or invalid store.yaml with the code a user sees', async () => {
    await expect(loadStoreConfig(storeWith())).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(loadStoreConfig(storeWith(`${HEADER}signing_key: ''\n`))).rejects.toMatchObject({
      code: 'VALIDATION',
      details: [expect.stringContaining('store.yaml:4')],
    });
  });
});
