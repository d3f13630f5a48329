import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { writeFileAtomic } from '@imgctl/core/yaml/document';
import { ImgctlError } from '@imgctl/core/util/errors';
import {
  keyIdOf,
  parsePrivateKey,
  parsePublicKey,
  parseSignedPlan,
  readStoreSigningKey,
  readStoreTrustedKeys,
  type SignedPlan,
  signPlan,
  type TrustedKey,
  verifyPlanWithAny,
} from '@imgctl/core/plan/signing';
import type { PlanDoc } from '@imgctl/core/store/types';
import type { Handler } from '../command.ts';

export const run: Handler = async ([file], options, ctx) => {
  const path = resolve(ctx.io.cwd, file!);
  const text = await readInput(path, file!);
  const keyFile = options.key as string | undefined;
  if (options.verify) {
    const signed = parseSignedPlan(text, file!);
    let keys: TrustedKey[];
    if (keyFile) {
      const key = parsePublicKey(await readInput(resolve(ctx.io.cwd, keyFile), keyFile), keyFile);
      keys = [{ key, keyId: keyIdOf(key), source: keyFile }];
    } else keys = await readStoreTrustedKeys(await ctx.storeDir());
    const used = verifyPlanWithAny(signed.plan, signed.signature, keys);
    const plan = signed.plan;
    const blobs = (plan.disks ?? [])
      .filter((d) => d.sha256)
      .map((d) => `${d.id}=sha256:${d.sha256}`);
    return {
      data: {
        valid: true,
        key_id: used.keyId,
        key: used.source,
        image: plan.image?.name,
        system: plan.system ?? null,
        blobs,
      },
      text: `valid: signed by key ${used.keyId} (${used.source}); plan of image ${plan.image?.name}${plan.system ? ` for system ${plan.system}` : ''}${blobs.length ? `; disks ${blobs.join(', ')}` : ''}`,
    };
  }
  const plan = planOf(text, file!);
  const key = keyFile
    ? parsePrivateKey(await readInput(resolve(ctx.io.cwd, keyFile), keyFile), keyFile)
    : (await readStoreSigningKey(await ctx.storeDir())).key;
  const signed: SignedPlan = {
    apiVersion: 'imgctl/v1',
    kind: 'SignedPlan',
    plan,
    signature: signPlan(plan, key),
  };
  const out = `${JSON.stringify(signed, null, 2)}\n`;
  const output = options.output as string | undefined;
  if (output !== undefined) {
    await writeFileAtomic(resolve(ctx.io.cwd, output), out);
    return {
      data: { output, key_id: signed.signature.key_id },
      text: `signed ${file} with key ${signed.signature.key_id} into ${output}`,
    };
  }
  return { data: signed, text: out };
};

/** A plan (as `imgctl plan --json` prints it), or the plan inside a signed plan (re-signed). */
function planOf(text: string, source: string): PlanDoc {
  let doc: { kind?: unknown; plan?: unknown } | null;
  try {
    doc = JSON.parse(text) as typeof doc;
  } catch (error) {
    throw new ImgctlError('VALIDATION', `${source} is not JSON`, {
      cause: error,
      hint: "save a plan with 'imgctl plan IMAGE --json > plan.json'",
    });
  }
  if (doc?.kind === 'SignedPlan') return parseSignedPlan(text, source).plan;
  if (doc?.kind !== 'Plan')
    throw new ImgctlError('VALIDATION', `${source} is not a plan (kind: Plan)`, {
      hint: "save a plan with 'imgctl plan IMAGE --json > plan.json'",
    });
  return doc as unknown as PlanDoc;
}

async function readInput(path: string, shown: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    throw new ImgctlError('NOT_FOUND', `${shown} cannot be read`, { cause: error });
  }
}
