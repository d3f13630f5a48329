/**
 * store.yaml's trusted_keys: the public keys `imgctl sign --verify` accepts besides the store's
 * own signing_key — so plans signed before a `keygen --force` still verify once the old key is
 * listed, and nothing else does.
 */
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { copyExampleStore, runCli } from './helpers/index.ts';

it('verifies a plan signed by a key the store lists in trusted_keys, and refuses others', async () => {
  const store = await copyExampleStore();
  const cli = (...args: string[]) => runCli([...args, '--store', store.dir], { cwd: store.dir });
  expect((await cli('keygen')).exitCode).toBe(0);
  const plan = await cli('plan', 'web', '--system', 'web01', '--json');
  expect(plan.exitCode).toBe(0);
  await writeFile(join(store.dir, 'plan.json'), plan.stdout);
  expect((await cli('sign', 'plan.json', '-o', 'old.signed.json')).exitCode).toBe(0);

  // The key is replaced; its public half is kept (committed) under keys/.
  await mkdir(join(store.dir, 'keys'));
  await copyFile(
    join(store.dir, '.state/keys/signing.key.pub'),
    join(store.dir, 'keys/signing-2025.pub'),
  );
  expect((await cli('keygen', '--force')).exitCode).toBe(0);
  const refused = await cli('sign', '--verify', 'old.signed.json');
  expect(refused.exitCode).toBe(7);
  expect(refused.stderr).toMatch(/not trusted here/);

  const storeYaml = await readFile(join(store.dir, 'store.yaml'), 'utf8');
  await writeFile(
    join(store.dir, 'store.yaml'),
    `${storeYaml}trusted_keys:\n  - keys/signing-2025.pub\n`,
  );
  const old = await cli('sign', '--verify', 'old.signed.json');
  expect(old.exitCode, old.stderr).toBe(0);
  expect(old.stdout).toMatch(
    /^valid: signed by key [0-9a-f]{16} \(trusted_keys keys\/signing-2025.pub\)/,
  );
  // A plan signed now verifies with the store's own key, as before.
  expect((await cli('sign', 'plan.json', '-o', 'new.signed.json')).exitCode).toBe(0);
  const fresh = await cli('sign', '--verify', 'new.signed.json', '--json');
  expect(fresh.exitCode).toBe(0);
  expect(JSON.parse(fresh.stdout)).toMatchObject({
    valid: true,
    key: expect.stringMatching(/^signing_key /),
  });

  // Trusting a key does not make a changed plan valid.
  const tampered = JSON.parse(await readFile(join(store.dir, 'old.signed.json'), 'utf8'));
  tampered.plan.hostname = 'evil.example.com';
  await writeFile(join(store.dir, 'tampered.json'), JSON.stringify(tampered));
  expect((await cli('sign', '--verify', 'tampered.json')).exitCode).toBe(7);

  // A file that is not a public key is a configuration error, said as such.
  await writeFile(join(store.dir, 'keys/signing-2025.pub'), 'not a key\n');
  const broken = await cli('sign', '--verify', 'old.signed.json');
  expect(broken.exitCode).toBe(3);
  expect(broken.stderr).toMatch(/trusted_keys keys\/signing-2025.pub is not a public key/);
});
