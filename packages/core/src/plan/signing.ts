/**
 * Plan signatures (docs/server.md, "Signing"): ed25519 over the canonical JSON of the plan, so
 * an agent holding the public key can check that the plan — and through it every blob, named by
 * its sha256 — came from this store.
 */
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  sign,
  verify,
} from 'node:crypto';
import { randomBytes } from 'node:crypto';
import { open, readFile, rename, rm } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { syncDirectory, writeFileAtomic } from '../yaml/document.ts';
import { parseDuration } from '../util/duration.ts';
import { ImgctlError } from '../util/errors.ts';
import { withStoreLock } from '../store/lock.ts';
import { ensureDir, exists, storePaths } from '../store/store.ts';
import { loadStoreConfig, storeKeyPath } from '../store/store-config.ts';
import type { PlanDoc } from '../store/types.ts';
import { editYamlText } from '../yaml/yaml-edit.ts';

const SIGNATURE_ALGORITHM = 'ed25519';
/** The HTTP header a signed response carries: `alg=ed25519, key_id=HEX16, sig=BASE64`. */
export const SIGNATURE_HEADER = 'imgctl-signature';

export interface PlanSignature {
  algorithm: typeof SIGNATURE_ALGORITHM;
  /** first 16 hex digits of the sha256 of the public key (DER, SubjectPublicKeyInfo) */
  key_id: string;
  /** when it was signed (RFC 3339, UTC) */
  issued_at: string;
  /** when it stops being valid (RFC 3339, UTC): a verifier refuses it afterwards */
  expires_at: string;
  /**
   * base64 of the 64-byte ed25519 signature over canonicalJson({expires_at, issued_at, plan}):
   * the time window is signed with the plan
   */
  value: string;
}

/** How long a signature is valid when store.yaml does not say (signature_ttl). */
export const DEFAULT_SIGNATURE_TTL_S = 3600;
/** How far a signer's clock may be ahead of the verifier's. */
const CLOCK_SKEW_MS = 5 * 60 * 1000;

export interface SignOptions {
  now: Date;
  ttlSeconds: number;
}

/** A plan saved with its signature: what `imgctl sign` writes and `imgctl sign --verify` reads. */
export interface SignedPlan {
  apiVersion: 'imgctl/v1';
  kind: 'SignedPlan';
  plan: PlanDoc;
  signature: PlanSignature;
}

/**
 * JSON with object keys sorted (by UTF-16 code units), no whitespace, members whose value is
 * undefined dropped — the same bytes for the same value whatever order it was built in.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value === 'boolean' || typeof value === 'string')
    return JSON.stringify(value);
  if (typeof value === 'number') {
    if (!Number.isFinite(value))
      throw new ImgctlError('USAGE', 'canonical JSON cannot hold NaN or Infinity');
    return JSON.stringify(value);
  }
  if (Array.isArray(value))
    return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  if (typeof value === 'object') {
    const obj = value as Record<string, unknown>;
    const members = Object.keys(obj)
      .filter((k) => obj[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`);
    return `{${members.join(',')}}`;
  }
  throw new ImgctlError('USAGE', `canonical JSON cannot hold a ${typeof value}`);
}

export interface GeneratedKey {
  /** PKCS#8 PEM; write it with mode 0600 and never print it */
  privateKeyPem: string;
  /** SubjectPublicKeyInfo PEM */
  publicKeyPem: string;
  keyId: string;
}

export function generateSigningKey(): GeneratedKey {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    keyId: keyIdOf(publicKey),
  };
}

/** The key id of a public key, or of the public half of a private key. */
export function keyIdOf(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  const der = pub.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(der).digest('hex').slice(0, 16);
}

/** Reads an ed25519 private key (PEM); `source` names it in errors. */
export function parsePrivateKey(pem: string | Buffer, source: string): KeyObject {
  return parseEd25519Key(pem, source, 'private', "make one with 'imgctl keygen'");
}

/** Reads an ed25519 public key (PEM); a private key is accepted and its public half used. */
export function parsePublicKey(pem: string | Buffer | KeyObject, source: string): KeyObject {
  if (typeof pem === 'object' && !Buffer.isBuffer(pem)) {
    return pem.type === 'private' ? createPublicKey(pem) : pem;
  }
  const hint = "the .pub file 'imgctl keygen' wrote next to the private key";
  return parseEd25519Key(pem, source, 'public', hint);
}

function parseEd25519Key(
  pem: string | Buffer,
  source: string,
  kind: 'private' | 'public',
  hint: string,
): KeyObject {
  let key: KeyObject;
  try {
    key = kind === 'private' ? createPrivateKey(pem) : createPublicKey(pem);
  } catch (error) {
    throw new ImgctlError('VALIDATION', `${source} is not a ${kind} key in PEM form`, {
      cause: error,
      hint,
    });
  }
  if (key.asymmetricKeyType !== 'ed25519')
    throw new ImgctlError('VALIDATION', `${source} is a ${key.asymmetricKeyType} key, not ed25519`);
  return key;
}

/**
 * Signs `plan` for `ttlSeconds` from `now`. `canonicalPlan` may be passed when it is at hand
 * (the server keeps it with a cached plan): it must be canonicalJson(plan).
 */
export function signPlan(
  plan: PlanDoc,
  privateKey: KeyObject,
  options: SignOptions,
  canonicalPlan = canonicalJson(plan),
): PlanSignature {
  const issued_at = options.now.toISOString();
  const expires_at = new Date(options.now.getTime() + options.ttlSeconds * 1000).toISOString();
  const bytes = signedBytes(canonicalPlan, issued_at, expires_at);
  const value = sign(null, bytes, privateKey).toString('base64');
  return {
    algorithm: SIGNATURE_ALGORITHM,
    key_id: keyIdOf(privateKey),
    issued_at,
    expires_at,
    value,
  };
}

/** canonicalJson({expires_at, issued_at, plan}) from the plan's canonical JSON (keys in order). */
function signedBytes(canonicalPlan: string, issuedAt: string, expiresAt: string): Buffer {
  return Buffer.from(
    `{"expires_at":${JSON.stringify(expiresAt)},"issued_at":${JSON.stringify(issuedAt)},"plan":${canonicalPlan}}`,
  );
}

/**
 * Throws ImgctlError INTEGRITY unless `signature` is `publicKey`'s over exactly this plan and
 * time window, and `now` is inside that window (its start may be up to 5 minutes ahead: clocks
 * differ).
 */
export function verifyPlan(
  plan: unknown,
  signature: PlanSignature,
  publicKey: KeyObject,
  now: Date = new Date(),
): void {
  if (signature.algorithm !== SIGNATURE_ALGORITHM)
    throw new ImgctlError(
      'INTEGRITY',
      `the plan is signed with '${String(signature.algorithm)}', not ${SIGNATURE_ALGORITHM}`,
    );
  const expected = keyIdOf(publicKey);
  if (signature.key_id !== expected) {
    throw new ImgctlError(
      'INTEGRITY',
      `the plan is signed by key ${String(signature.key_id)}, not by the trusted key ${expected}`,
      { hint: 'check which key the server signs with (GET /v1) and which one you trust' },
    );
  }
  if (typeof signature.issued_at !== 'string' || typeof signature.expires_at !== 'string')
    throw new ImgctlError(
      'INTEGRITY',
      'the plan is signed without a time window (issued, expires)',
      {
        hint: 'it was signed by an older imgctl: sign it again, or ask the server for a fresh plan',
      },
    );
  const sig = Buffer.from(String(signature.value), 'base64');
  let ok = false;
  try {
    const bytes = signedBytes(
      canonicalJson(plan),
      String(signature.issued_at),
      String(signature.expires_at),
    );
    ok = sig.length === 64 && verify(null, bytes, publicKey, sig);
  } catch {
    ok = false;
  }
  if (!ok) {
    throw new ImgctlError(
      'INTEGRITY',
      `the plan's signature does not match its content (key ${expected})`,
      { hint: 'the plan was changed after it was signed, or signed by another key' },
    );
  }
  const issued = Date.parse(signature.issued_at);
  const expires = Date.parse(signature.expires_at);
  if (!(issued <= now.getTime() + CLOCK_SKEW_MS))
    throw new ImgctlError(
      'INTEGRITY',
      `the plan was signed at ${signature.issued_at}, later than now (${now.toISOString()})`,
      { hint: 'check the clocks of the server and of this machine' },
    );
  if (!(now.getTime() <= expires))
    throw new ImgctlError(
      'INTEGRITY',
      `the plan's signature expired at ${signature.expires_at} (signed at ${signature.issued_at})`,
      {
        hint: 'ask the server for a fresh plan; a stale copy replayed, or a release revoked since, is refused this way',
      },
    );
}

export function formatSignatureHeader(signature: PlanSignature): string {
  return `alg=${signature.algorithm}, key_id=${signature.key_id}, issued=${signature.issued_at}, expires=${signature.expires_at}, sig=${signature.value}`;
}

/** Parses an `Imgctl-Signature` header; INTEGRITY when it is malformed. */
export function parseSignatureHeader(header: string): PlanSignature {
  const fields = new Map<string, string>();
  for (const part of header.split(',')) {
    const eq = part.indexOf('=');
    if (eq > 0) fields.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
  }
  const algorithm = fields.get('alg');
  const keyId = fields.get('key_id');
  const issued = fields.get('issued');
  const expires = fields.get('expires');
  const value = fields.get('sig');
  if (algorithm !== SIGNATURE_ALGORITHM || !keyId || !value || !issued || !expires) {
    throw new ImgctlError('INTEGRITY', `malformed ${SIGNATURE_HEADER} header`);
  }
  return { algorithm, key_id: keyId, issued_at: issued, expires_at: expires, value };
}

/** Reads a saved signed plan (`imgctl sign` output); VALIDATION when it is not one. */
function parseSignedPlan(text: string, source: string): SignedPlan {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (error) {
    throw new ImgctlError('VALIDATION', `${source} is not JSON`, { cause: error });
  }
  const d = doc as Partial<SignedPlan> | null;
  if (
    !d ||
    typeof d !== 'object' ||
    d.kind !== 'SignedPlan' ||
    typeof d.plan !== 'object' ||
    d.plan === null ||
    typeof d.signature !== 'object' ||
    d.signature === null
  ) {
    throw new ImgctlError(
      'VALIDATION',
      `${source} is not a signed plan (kind: SignedPlan with plan and signature)`,
      {
        hint: "sign a plan with 'imgctl sign PLAN.json', or save one with GET /v1/plan?format=signed",
      },
    );
  }
  return d as SignedPlan;
}

/** Where `imgctl keygen` puts a store's key when not told otherwise (.state/ is git-ignored). */
export const DEFAULT_KEY_FILE = '.state/keys/signing.key';

export interface WrittenKey {
  privateKey: string;
  publicKey: string;
  keyId: string;
  publicKeyPem: string;
}

/**
 * Makes an ed25519 key pair: the private key at `file` (mode 0600, written whole or not at all)
 * and the public key at `file.pub`. CONFLICT when `file` exists, unless `force`.
 */
export async function writeSigningKey(
  file: string,
  options: { force?: boolean } = {},
): Promise<WrittenKey> {
  const abs = resolve(file);
  if (!options.force && (await exists(abs))) {
    throw new ImgctlError('CONFLICT', `${file} already exists`, {
      hint: 'pass --force to replace it (signatures made with the old key stop verifying)',
    });
  }
  const key = generateSigningKey();
  await ensureDir(dirname(abs), 0o700);
  const tmp = join(
    dirname(abs),
    `.${basename(abs)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`,
  );
  try {
    const handle = await open(tmp, 'wx', 0o600);
    try {
      await handle.writeFile(key.privateKeyPem);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await writeFileAtomic(`${abs}.pub`, key.publicKeyPem);
    await rename(tmp, abs);
  } catch (error) {
    await rm(tmp, { force: true });
    throw error;
  }
  await syncDirectory(dirname(abs));
  return {
    privateKey: abs,
    publicKey: `${abs}.pub`,
    keyId: key.keyId,
    publicKeyPem: key.publicKeyPem,
  };
}

/**
 * Sets `signing_key` in store.yaml (comments kept): relative to the store when the key is
 * inside it, absolute otherwise.
 */
export async function setStoreSigningKey(storeDir: string, keyFile: string): Promise<string> {
  const rel = relative(storeDir, resolve(keyFile));
  const value = rel.startsWith('..') || isAbsolute(rel) ? resolve(keyFile) : rel;
  await withStoreLock(storeDir, async () => {
    const file = storePaths.storeFile(storeDir);
    const text = await readFile(file, 'utf8');
    await writeFileAtomic(file, editYamlText(text, [{ path: ['signing_key'], value }]));
  });
  return value;
}

/** store.yaml's signing_key and trusted_keys, read with the rest of store.yaml, validated. */
async function readStoreKeys(
  storeDir: string,
): Promise<{ signingKey?: string; trustedKeys: string[] }> {
  const config = await loadStoreConfig(storeDir);
  return { signingKey: config.signing_key, trustedKeys: config.trusted_keys ?? [] };
}

async function readKeyFile(storeDir: string, configured: string, field: string): Promise<Buffer> {
  const file = storeKeyPath(storeDir, configured);
  try {
    return await readFile(file);
  } catch (error) {
    throw new ImgctlError('NOT_FOUND', `${field} ${configured} cannot be read`, {
      cause: error,
    });
  }
}

/** The private key store.yaml's `signing_key` names; NOT_FOUND when there is none. */
async function readStoreSigningKey(storeDir: string): Promise<{ key: KeyObject; file: string }> {
  const { signingKey: configured } = await readStoreKeys(storeDir);
  if (configured === undefined) {
    throw new ImgctlError('NOT_FOUND', 'store.yaml has no signing_key', {
      hint: "make one with 'imgctl keygen', or pass --key FILE",
    });
  }
  const pem = await readKeyFile(storeDir, configured, 'signing_key');
  const file = storeKeyPath(storeDir, configured);
  return { key: parsePrivateKey(pem, `signing_key ${configured}`), file };
}

/** A public key a signature is checked against, and where it came from (for messages). */
export interface TrustedKey {
  key: KeyObject;
  keyId: string;
  source: string;
}

/**
 * The public keys a store trusts plans from: the public half of its `signing_key`, and each
 * file `trusted_keys` names (PEM public keys, relative to the store or absolute) — e.g. the key
 * it signed with before a `keygen --force`, or another store's. NOT_FOUND when there are none.
 */
async function readStoreTrustedKeys(storeDir: string): Promise<TrustedKey[]> {
  const { signingKey, trustedKeys } = await readStoreKeys(storeDir);
  const keys: TrustedKey[] = [];
  if (signingKey !== undefined) {
    const pem = await readKeyFile(storeDir, signingKey, 'signing_key');
    const key = parsePublicKey(parsePrivateKey(pem, `signing_key ${signingKey}`), signingKey);
    keys.push({ key, keyId: keyIdOf(key), source: `signing_key ${signingKey}` });
  }
  for (const file of trustedKeys) {
    const source = `trusted_keys ${file}`;
    const key = parsePublicKey(await readKeyFile(storeDir, file, 'trusted_keys'), source);
    keys.push({ key, keyId: keyIdOf(key), source });
  }
  if (keys.length === 0) {
    throw new ImgctlError('NOT_FOUND', 'store.yaml has neither signing_key nor trusted_keys', {
      hint: "pass --key FILE.pub, or list the key's .pub file in trusted_keys",
    });
  }
  return keys;
}

/**
 * verifyPlan with the one of `keys` whose id the signature names; INTEGRITY when none does.
 * Returns the key that verified it.
 */
function verifyPlanWithAny(
  plan: unknown,
  signature: PlanSignature,
  keys: readonly TrustedKey[],
  now: Date,
): TrustedKey {
  const match = keys.find((k) => k.keyId === signature.key_id);
  if (!match) {
    throw new ImgctlError(
      'INTEGRITY',
      `the plan is signed by key ${String(signature.key_id)}, which is not trusted here (trusted: ${keys.map((k) => `${k.keyId} from ${k.source}`).join(', ')})`,
      { hint: "verify with --key FILE.pub, or add that key's .pub file to trusted_keys" },
    );
  }
  verifyPlan(plan, signature, match.key, now);
  return match;
}

/** The files of `imgctl sign`, named as the user gave them (so in messages), read from `cwd`. */
export interface SignFileOptions {
  /** the plan, or signed plan, as given */
  file: string;
  /** a key file as given: the private key to sign with, or the public key to verify with */
  keyFile?: string;
  cwd: string;
  /**
   * The store whose signing_key (or trusted keys) serve when there is no keyFile; asked for
   * only then, and after the plan is read (a plan that cannot be read says so first).
   */
  storeDir: () => Promise<string>;
  /** signing: how long the signature is valid (--ttl: 90s, 15m, 1h, 30d) */
  ttl?: string;
  /** the time signatures are made or checked at (default: the clock's) */
  now?: Date;
}

/**
 * The signed plan `imgctl sign` writes: the plan of `file` (as `imgctl plan --json` prints it,
 * or the plan inside a signed plan, re-signed) signed with `keyFile` or the store's signing_key.
 */
export async function signPlanFile(options: SignFileOptions): Promise<SignedPlan> {
  const plan = planOf(await readInput(options.cwd, options.file), options.file);
  let ttl = options.ttl === undefined ? DEFAULT_SIGNATURE_TTL_S : ttlSeconds(options.ttl, '--ttl');
  let key: KeyObject;
  if (options.keyFile)
    key = parsePrivateKey(await readInput(options.cwd, options.keyFile), options.keyFile);
  else {
    const storeDir = await options.storeDir();
    key = (await readStoreSigningKey(storeDir)).key;
    if (options.ttl === undefined) ttl = await signatureTtl(storeDir);
  }
  const signature = signPlan(plan, key, { now: options.now ?? new Date(), ttlSeconds: ttl });
  return { apiVersion: 'imgctl/v1', kind: 'SignedPlan', plan, signature };
}

/** The longest a signature may live: a year and a day. */
const MAX_SIGNATURE_TTL_S = 366 * 86_400;

/** A signature lifetime in whole seconds (1s to 366d), from a duration like 1h. */
export function ttlSeconds(text: string, what: string): number {
  const seconds = Math.floor(parseDuration(text, what) / 1000);
  if (seconds < 1 || seconds > MAX_SIGNATURE_TTL_S)
    throw new ImgctlError('USAGE', `${what} must be from 1s to 366d, not '${text}'`);
  return seconds;
}

/** store.yaml's signature_ttl in seconds, else the default (1h). */
export async function signatureTtl(storeDir: string): Promise<number> {
  const { signature_ttl: ttl } = await loadStoreConfig(storeDir);
  return ttl === undefined ? DEFAULT_SIGNATURE_TTL_S : ttlSeconds(ttl, 'signature_ttl');
}

/** A signed plan whose signature checked out, and by which key. */
export interface VerifiedPlan {
  plan: PlanDoc;
  key: TrustedKey;
  signature: PlanSignature;
  /** `ID=sha256:HEX` of each disk with contents: what the signature vouches for */
  blobs: string[];
}

/**
 * Checks the signed plan of `file` against `keyFile` (a public key) or the keys the store
 * trusts; INTEGRITY when it does not verify.
 */
export async function verifySignedPlanFile(options: SignFileOptions): Promise<VerifiedPlan> {
  const signed = parseSignedPlan(await readInput(options.cwd, options.file), options.file);
  let keys: TrustedKey[];
  if (options.keyFile) {
    const pem = await readInput(options.cwd, options.keyFile);
    const key = parsePublicKey(pem, options.keyFile);
    keys = [{ key, keyId: keyIdOf(key), source: options.keyFile }];
  } else keys = await readStoreTrustedKeys(await options.storeDir());
  const key = verifyPlanWithAny(signed.plan, signed.signature, keys, options.now ?? new Date());
  const blobs = (signed.plan.disks ?? [])
    .filter((d) => d.sha256)
    .map((d) => `${d.id}=sha256:${d.sha256}`);
  return { plan: signed.plan, key, signature: signed.signature, blobs };
}

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

async function readInput(cwd: string, file: string): Promise<string> {
  try {
    return await readFile(resolve(cwd, file), 'utf8');
  } catch (error) {
    throw new ImgctlError('NOT_FOUND', `${file} cannot be read`, { cause: error });
  }
}
