import { resolve } from 'node:path';
import { signPlanFile, verifySignedPlanFile } from '@imgctl/core/plan/signing';
import { writeFileAtomic } from '@imgctl/core/yaml/document';
import type { Handler } from '../command.ts';

export interface SignOptions {
  verify?: boolean;
  key?: string;
  output?: string;
  ttl?: string;
}

export const run: Handler<SignOptions> = async ([file], options, ctx) => {
  const files = {
    file: file!,
    keyFile: options.key,
    cwd: ctx.io.cwd,
    storeDir: () => ctx.storeDir(),
    ttl: options.ttl,
  };
  if (options.verify) {
    const { plan, key, signature, blobs } = await verifySignedPlanFile(files);
    return {
      data: {
        valid: true,
        key_id: key.keyId,
        key: key.source,
        image: plan.image?.name,
        system: plan.system ?? null,
        issued_at: signature.issued_at,
        expires_at: signature.expires_at,
        blobs,
      },
      text: `valid: signed by key ${key.keyId} (${key.source}) at ${signature.issued_at}, until ${signature.expires_at}; plan of image ${plan.image?.name}${plan.system ? ` for system ${plan.system}` : ''}${blobs.length ? `; disks ${blobs.join(', ')}` : ''}`,
    };
  }
  const signed = await signPlanFile(files);
  const out = `${JSON.stringify(signed, null, 2)}\n`;
  if (options.output !== undefined) {
    await writeFileAtomic(resolve(ctx.io.cwd, options.output), out);
    return {
      data: {
        output: options.output,
        key_id: signed.signature.key_id,
        expires_at: signed.signature.expires_at,
      },
      text: `signed ${file} with key ${signed.signature.key_id} into ${options.output}, valid until ${signed.signature.expires_at}`,
    };
  }
  return { data: signed, text: out };
};
