/**
 * The signature of a pushed release (docs/distribution.md, "The signature"): the plan of the
 * release (its default record, no system, secrets redacted) signed with the store's
 * `signing_key` for its `signature_ttl`, as `imgctl sign` writes a signed plan, pushed as a
 * referrer of the image manifest — artifactType `application/vnd.imgctl.signature.v1`, the
 * OCI empty config, one layer holding the signed plan. The plan names every disk by its
 * sha256, so the signature vouches for the layers too. A signature of the same key still valid
 * for more than half its lifetime is kept instead of pushing another.
 */
import { readFile } from 'node:fs/promises';
import type { KeyObject } from 'node:crypto';
import { ImgctlError } from '../util/errors.ts';
import { redactPlan, resolvePlan } from '../plan/plan.ts';
import {
  keyIdOf,
  parsePrivateKey,
  signatureTtl,
  signPlan,
  type SignedPlan,
} from '../plan/signing.ts';
import { loadStoreConfig, storeKeyPath } from '../store/store-config.ts';
import type { PlanDoc } from '../store/types.ts';
import type { BlobSource, OciDescriptor, Registry } from '../registry/types.ts';
import {
  ANNOTATION,
  bufferSource,
  digestOf,
  EMPTY_CONFIG,
  OCI_MANIFEST,
  SIGNATURE_ARTIFACT,
  SIGNED_PLAN,
} from './oci-artifact.ts';

export interface SignatureResult {
  /** the referrer manifest's digest */
  digest: string;
  keyId: string;
  expiresAt: string;
  /** true when a valid signature of the same key was already there */
  reused: boolean;
}

/** Everything needed to sign, read before anything is pushed. */
export interface PreparedSignature {
  key: KeyObject;
  keyId: string;
  ttlSeconds: number;
  plan: PlanDoc;
}

/**
 * The store's signing key and the release's plan; undefined when store.yaml has no
 * signing_key (the store does not sign). A plan that does not resolve fails the push here,
 * before a byte is sent.
 */
export async function prepareSignature(
  storeDir: string,
  planRef: string,
): Promise<PreparedSignature | undefined> {
  const configured = (await loadStoreConfig(storeDir)).signing_key;
  if (configured === undefined) return undefined;
  let pem: Buffer;
  try {
    pem = await readFile(storeKeyPath(storeDir, configured));
  } catch (error) {
    throw new ImgctlError('NOT_FOUND', `signing_key ${configured} cannot be read`, {
      cause: error,
    });
  }
  const key = parsePrivateKey(pem, `signing_key ${configured}`);
  return {
    key,
    keyId: keyIdOf(key),
    ttlSeconds: await signatureTtl(storeDir),
    plan: redactPlan(await resolvePlan(storeDir, { image: planRef })),
  };
}

/**
 * Pushes the signature of the manifest `subject` (or finds a valid one of the same key among
 * its referrers); `push` uploads a blob and reports it with the others.
 */
export async function pushSignature(
  registry: Registry,
  repository: string,
  prepared: PreparedSignature,
  context: {
    subject: OciDescriptor;
    now: Date;
    push: (what: string, source: BlobSource) => Promise<void>;
  },
): Promise<SignatureResult> {
  const { subject, now } = context;
  const existing = await registry.referrers(repository, subject.digest, SIGNATURE_ARTIFACT);
  const fresh = existing.find((d) => {
    const expires = Date.parse(d.annotations?.[ANNOTATION.expires] ?? '');
    return (
      d.annotations?.[ANNOTATION.keyId] === prepared.keyId &&
      expires - now.getTime() > (prepared.ttlSeconds * 1000) / 2
    );
  });
  if (fresh)
    return {
      digest: fresh.digest,
      keyId: prepared.keyId,
      expiresAt: fresh.annotations![ANNOTATION.expires]!,
      reused: true,
    };
  const signature = signPlan(prepared.plan, prepared.key, {
    now,
    ttlSeconds: prepared.ttlSeconds,
  });
  const signed: SignedPlan = {
    apiVersion: 'imgctl/v1',
    kind: 'SignedPlan',
    plan: prepared.plan,
    signature,
  };
  const layer = Buffer.from(`${JSON.stringify(signed, null, 2)}\n`);
  const layerDigest = digestOf(layer);
  await context.push('empty config', bufferSource(EMPTY_CONFIG.bytes));
  await context.push('signature', bufferSource(layer, layerDigest));
  const bytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      artifactType: SIGNATURE_ARTIFACT,
      config: {
        mediaType: EMPTY_CONFIG.mediaType,
        digest: EMPTY_CONFIG.digest,
        size: EMPTY_CONFIG.bytes.length,
      },
      layers: [
        {
          mediaType: SIGNED_PLAN,
          digest: layerDigest,
          size: layer.length,
          annotations: { [ANNOTATION.title]: 'signed-plan.json' },
        },
      ],
      subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
      annotations: {
        [ANNOTATION.created]: signature.issued_at,
        [ANNOTATION.keyId]: signature.key_id,
        [ANNOTATION.expires]: signature.expires_at,
      },
    }),
  );
  const digest = await registry.putManifest(repository, digestOf(bytes), {
    mediaType: OCI_MANIFEST,
    bytes,
  });
  return { digest, keyId: signature.key_id, expiresAt: signature.expires_at, reused: false };
}
