/**
 * Documents for the validation tests: a valid image, record and system that a test edits to
 * make one problem, and temporary stores built from them.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { onTestFinished } from 'vitest';
import { formatProblem, parseYaml } from '../../packages/core/src/yaml/document.ts';
import {
  type ValidateOptions,
  validateDocument,
} from '../../packages/core/src/validate/document.ts';
import type { DocKind } from '../../packages/core/src/validate/schemas.ts';
import { storePaths } from '../../packages/core/src/store/store.ts';

export const SHA = 'a'.repeat(64);

export const IMAGE = `apiVersion: imgctl/v1
kind: Image
name: web
revision: 1
boot:
  - type: hvm
    arch: x86_64
    loader: hd
    drives:
      - disk: system
        target: vda
      - disk: data
        target: vdb
devices:
  vcpus: 1
  memory: 512MiB
disks:
  - id: system
    use: system
    format: qcow2
    size: 2GiB
    sha256: ${SHA}
    blob: true
  - id: data
    use: data
    format: qcow2
    size: 1GiB
parameters:
  port:
    default: 80
    type: integer
  edition:
    default: community
    customizable: false
  url:
    computed: "http://{{ HOSTNAME }}:{{ port }}/"
provision:
  custom_scripts: [base]
`;

export const RECORD = `apiVersion: imgctl/v1
kind: ImageRecord
name: large
image: web
provision:
  vcpus: 2
  memory: 2GiB
  disks:
    data:
      size: 10GiB
  parameters:
    port: 8080
`;

export const SYSTEM = `apiVersion: imgctl/v1
kind: System
name: web1
hostname: web1.example.com
image: web
record: large
interfaces:
  - name: eth0
    mac: 52:54:00:12:34:56
    ip: 192.0.2.10/24
    gateway: 192.0.2.1
    dns: [192.0.2.53, "2001:db8::53"]
ssh_authorized_keys:
  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKx user@host
parameters:
  port: 8081
`;

/** The problems of `text` read as a document of `kind`, formatted as the CLI prints them. */
export function check(kind: DocKind, text: string, options?: ValidateOptions): string[] {
  return validateDocument(kind, parseYaml('f.yaml', text), options).map(formatProblem);
}

export /** `text` with the line containing `from` replaced by `to` (indentation kept). */
function edit(text: string, from: string, to: string): string {
  if (!text.includes(from)) throw new Error(`fixture lacks ${from}`);
  return text.replace(from, to);
}

/** A temporary store of `tree` (plus a store.yaml unless `tree` has one), removed after a test. */
export async function makeStore(tree: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'imgctl-validate-'));
  onTestFinished(() => rm(dir, { recursive: true, force: true }));
  const files = { 'store.yaml': 'apiVersion: imgctl/v1\nkind: ImageStore\nname: lab\n', ...tree };
  const paths = Object.keys(files).map((file) => join(dir, file));
  await Promise.all(
    [...new Set(paths.map((p) => dirname(p)))].map((d) => mkdir(d, { recursive: true })),
  );
  await Promise.all(Object.values(files).map((text, i) => writeFile(paths[i]!, text)));
  return dir;
}

/** A valid store: image web, its records large and default, a custom script set, system web1. */
export const GOOD_STORE = {
  'images/web/image.yaml': IMAGE,
  'images/web/records/large.yaml': RECORD,
  'images/web/records/default.yaml':
    'apiVersion: imgctl/v1\nkind: ImageRecord\nname: default\nimage: web\n',
  'images/web/custom_scripts/base/10-hello.sh': 'echo hello\n',
  'systems/web1.yaml': SYSTEM,
};

/** A blob file of the store under `sha256` (its content is not checked against the name). */
export async function putBlob(storeDir: string, sha256: string, content = 'x'): Promise<void> {
  const file = storePaths.blobFile(storeDir, sha256);
  await mkdir(dirname(file), { recursive: true });
  await writeFile(file, content);
}
