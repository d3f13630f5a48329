import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  canonicalJson,
  formatSignatureHeader,
  generateSigningKey,
  parsePrivateKey,
  parsePublicKey,
  parseSignatureHeader,
  type PlanSignature,
  signPlan,
  signPlanFile,
  ttlSeconds,
  verifyPlan,
  verifySignedPlanFile,
  writeSigningKey,
} from './signing.ts';
import type { PlanDoc } from '../store/types.ts';

const plan = {
  apiVersion: 'imgctl/v1',
  kind: 'Plan',
  image: { name: 'web', revision: 3 },
  disks: [{ id: 'root', sha256: 'a'.repeat(64) }],
  parameters: { b: 1, a: 'x' },
} as unknown as PlanDoc;

describe('canonicalJson', () => {
  it('sorts keys at every level and drops undefined members', () => {
    expect(canonicalJson({ b: 1, a: { d: [1, { z: 1, y: 2 }], c: undefined } })).toBe(
      '{"a":{"d":[1,{"y":2,"z":1}]},"b":1}',
    );
  });
  it('is the same whatever order the value was built in', () => {
    expect(canonicalJson({ x: 1, y: 2 })).toBe(canonicalJson({ y: 2, x: 1 }));
  });
  it('refuses NaN', () => {
    expect(() => canonicalJson({ a: Number.NaN })).toThrow(/NaN/);
  });
});

const NOW = new Date('2026-12-04T08:00:00Z');
const HOUR = { now: NOW, ttlSeconds: 3600 };

describe('plan signatures', () => {
  const key = generateSigningKey();
  const priv = parsePrivateKey(key.privateKeyPem, 'test');
  const pub = parsePublicKey(key.publicKeyPem, 'test.pub');

  it('verifies a plan signed by the key, in any key order', () => {
    const signature = signPlan(plan, priv, HOUR);
    expect(signature.key_id).toBe(key.keyId);
    const reordered = Object.fromEntries(Object.entries(plan).reverse());
    expect(() => verifyPlan(reordered, signature, pub, NOW)).not.toThrow();
  });

  it('refuses a changed blob hash with INTEGRITY', () => {
    const signature = signPlan(plan, priv, HOUR);
    const changed = structuredClone(plan);
    changed.disks[0]!.sha256 = 'b'.repeat(64);
    expect(() => verifyPlan(changed, signature, pub, NOW)).toThrow(
      expect.objectContaining({ code: 'INTEGRITY' }),
    );
  });

  it('refuses a signature by another key, naming both key ids', () => {
    const other = generateSigningKey();
    const signature = signPlan(plan, parsePrivateKey(other.privateKeyPem, 'other'), HOUR);
    expect(() => verifyPlan(plan, signature, pub, NOW)).toThrow(new RegExp(other.keyId));
  });

  it('round-trips the signature header', () => {
    const signature = signPlan(plan, priv, HOUR);
    expect(parseSignatureHeader(formatSignatureHeader(signature))).toEqual(signature);
    expect(() => parseSignatureHeader('garbage')).toThrow(
      expect.objectContaining({ code: 'INTEGRITY' }),
    );
  });

  it('holds for its time window only, which is signed with the plan', () => {
    const signature = signPlan(plan, priv, HOUR);
    expect(signature).toMatchObject({
      issued_at: '2026-12-04T08:00:00.000Z',
      expires_at: '2026-12-04T09:00:00.000Z',
    });
    const at = (iso: string) => () => verifyPlan(plan, signature, pub, new Date(iso));
    expect(at('2026-12-04T08:59:59Z')).not.toThrow();
    // a clock a little behind the signer's still accepts it
    expect(at('2026-12-04T07:56:00Z')).not.toThrow();
    expect(at('2026-12-04T09:00:01Z')).toThrow(
      expect.objectContaining({
        code: 'INTEGRITY',
        message:
          "the plan's signature expired at 2026-12-04T09:00:00.000Z (signed at 2026-12-04T08:00:00.000Z)",
      }),
    );
    expect(at('2026-12-04T07:50:00Z')).toThrow(/later than now/);
    // a window stretched after signing no longer matches
    const stretched = { ...signature, expires_at: '2027-12-04T09:00:00.000Z' };
    expect(() => verifyPlan(plan, stretched, pub, NOW)).toThrow(/does not match its content/);
  });

  it('lives 1s to 366d, and one without a time window is refused as such', () => {
    expect(ttlSeconds('1h', '--ttl')).toBe(3600);
    for (const bad of ['0s', '367d', '999999999d'])
      expect(() => ttlSeconds(bad, '--ttl'), bad).toThrow(/must be from 1s to 366d/);
    const { issued_at: _i, expires_at: _e, ...old } = signPlan(plan, priv, HOUR);
    expect(() => verifyPlan(plan, old as unknown as PlanSignature, pub, NOW)).toThrow(
      /signed without a time window/,
    );
  });

  it('refuses a key that is not ed25519 PEM', () => {
    expect(() => parsePublicKey('not a key', 'k.pub')).toThrow(/k.pub is not a public key/);
  });
});

describe('writeSigningKey', () => {
  let dir: string | undefined;
  afterEach(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('writes the private key with mode 0600 and refuses to overwrite it without force', async () => {
    dir = await mkdtemp(join(tmpdir(), 'imgctl-key-'));
    const file = join(dir, 'keys/signing.key');
    const written = await writeSigningKey(file);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(await readFile(`${file}.pub`, 'utf8')).toContain('BEGIN PUBLIC KEY');
    await expect(writeSigningKey(file)).rejects.toMatchObject({ code: 'CONFLICT' });
    const again = await writeSigningKey(file, { force: true });
    expect(again.keyId).not.toBe(written.keyId);
  });
});

describe('signPlanFile and verifySignedPlanFile', () => {
  let cwd: string | undefined;
  afterEach(async () => {
    if (cwd) await rm(cwd, { recursive: true, force: true });
  });
  const noStore = () => Promise.reject(new Error('the store is not needed with a key file'));
  /** The options naming `file` (and `keyFile`) in the test's directory, with no store. */
  const named = (file: string, keyFile?: string) => ({
    file,
    keyFile,
    cwd: cwd!,
    storeDir: noStore,
  });

  it('signs a saved plan with a key file and verifies it with the public key', async () => {
    cwd = await mkdtemp(join(tmpdir(), 'imgctl-sign-'));
    await writeSigningKey(join(cwd, 'k.key'));
    await writeFile(join(cwd, 'plan.json'), JSON.stringify(plan));
    const signed = await signPlanFile(named('plan.json', 'k.key'));
    expect(signed).toMatchObject({ apiVersion: 'imgctl/v1', kind: 'SignedPlan', plan });
    await writeFile(join(cwd, 'signed.json'), JSON.stringify(signed));
    const verified = await verifySignedPlanFile(named('signed.json', 'k.key.pub'));
    expect(verified.key).toMatchObject({ keyId: signed.signature.key_id, source: 'k.key.pub' });
    expect(verified.blobs).toEqual([`root=sha256:${'a'.repeat(64)}`]);

    // A signed plan given to sign is re-signed: its plan, not the envelope.
    const again = await signPlanFile(named('signed.json', 'k.key'));
    expect(again.plan).toEqual(plan);

    const tampered = { ...signed, plan: { ...plan, parameters: { a: 'y', b: 1 } } };
    await writeFile(join(cwd, 'tampered.json'), JSON.stringify(tampered));
    await expect(verifySignedPlanFile(named('tampered.json', 'k.key.pub'))).rejects.toMatchObject({
      code: 'INTEGRITY',
    });
  });

  it('says which file is not a plan or cannot be read, before asking for the store', async () => {
    cwd = await mkdtemp(join(tmpdir(), 'imgctl-sign-'));
    await writeFile(join(cwd, 'image.json'), '{"kind":"Image"}');
    await expect(signPlanFile(named('image.json'))).rejects.toMatchObject({
      code: 'VALIDATION',
      message: 'image.json is not a plan (kind: Plan)',
    });
    await expect(verifySignedPlanFile(named('nope.json'))).rejects.toMatchObject({
      code: 'NOT_FOUND',
      message: 'nope.json cannot be read',
    });
  });
});
