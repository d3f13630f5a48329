import { join, resolve } from 'node:path';
import { DEFAULT_KEY_FILE, setStoreSigningKey, writeSigningKey } from '@imgctl/core/plan/signing';
import type { Handler } from '../command.ts';

export interface KeygenOptions {
  output?: string;
  force?: boolean;
}

/** With -o: a key pair at FILE and FILE.pub. Without: the store's key, set as its signing_key. */
export const run: Handler<KeygenOptions> = async (_args, options, ctx) => {
  const { output } = options;
  const force = Boolean(options.force);
  if (output !== undefined) {
    const key = await writeSigningKey(resolve(ctx.io.cwd, output), { force });
    return {
      data: {
        private_key: key.privateKey,
        public_key: key.publicKey,
        key_id: key.keyId,
        signing_key: null,
      },
      text: `wrote ${key.privateKey} (private, mode 0600) and ${key.publicKey}\nkey id ${key.keyId}\nto sign plans with it, set signing_key: ${key.privateKey} in store.yaml`,
    };
  }
  const storeDir = await ctx.storeDir();
  const key = await writeSigningKey(join(storeDir, DEFAULT_KEY_FILE), { force });
  const configured = await setStoreSigningKey(storeDir, key.privateKey);
  return {
    data: {
      private_key: key.privateKey,
      public_key: key.publicKey,
      key_id: key.keyId,
      signing_key: configured,
    },
    text: `wrote ${key.privateKey} (private, mode 0600) and ${key.publicKey}\nkey id ${key.keyId}\nstore.yaml: signing_key: ${configured} — the server signs every plan with it\nagents trust it with: --trust ${key.publicKey}`,
  };
};
