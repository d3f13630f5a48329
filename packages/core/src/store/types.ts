/**
 * The documents of an image store, as read from YAML after schema validation.
 * Sizes are kept as written (`512MiB`, `2GiB` or a byte count); `parseSize` turns them into bytes.
 * docs/formats.md describes every field; schemas/*.json are the source of truth for validation.
 */

export const API_VERSION = 'imgctl/v1';

export type Size = string | number;

export interface ImageStoreDoc {
  apiVersion: typeof API_VERSION;
  kind: 'ImageStore';
  name: string;
  description?: string;
  defaults?: {
    record?: string;
    virt_type?: 'kvm' | 'qemu' | 'auto';
    network?: string;
  };
  server?: {
    listen?: string;
    url?: string;
  };
  signing_key?: string;
  trusted_keys?: string[];
  /** how long a plan signature stays valid: 90s, 15m, 1h, 30d (default 1h) */
  signature_ttl?: string;
  /** registries agents pull disks from before the server: oci://HOST/PREFIX or …/{image} */
  blob_mirrors?: string[];
}

export interface OsInfo {
  family: string;
  distro?: string;
  version?: string;
  arch?: string;
}

export type BootType = 'hvm' | 'xen';

export interface DriveMapping {
  disk: string;
  target: string;
}

export interface BootEntry {
  type: BootType;
  arch: string;
  features?: string[];
  firmware?: 'bios' | 'uefi';
  /** boot device when booting from a disk of the image; absent when kernel is given */
  loader?: 'hd' | 'cdrom';
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  drives: DriveMapping[];
}

export interface Nic {
  model?: string;
  network?: string;
  bridge?: string;
  mac?: string;
}

export interface Devices {
  vcpus: number;
  memory: Size;
  nics?: Nic[];
  graphics?: 'none' | 'vnc' | 'spice';
  console?: 'serial' | 'none';
}

export type DiskUse = 'system' | 'data' | 'scratch';

export interface Disk {
  id: string;
  use: DiskUse;
  format: 'raw' | 'qcow2' | 'vmdk' | 'vdi' | 'vhdx';
  size: Size;
  sha256?: string;
  /** true when the content is in this store's .blobs/sha256/ under `sha256` */
  blob?: boolean;
  url?: string;
}

export type ParameterType = 'string' | 'integer' | 'boolean' | 'size';

export interface Parameter {
  default?: unknown;
  type?: ParameterType;
  description?: string;
  /** false: only the image may set it; records, systems and --set are refused */
  customizable?: boolean;
  secret?: boolean;
  /** a template over other parameters and the template variables */
  computed?: string;
}

export interface ProvisionSpec {
  script?: string;
  custom_scripts?: string[];
  kickstart?: string;
}

export interface Requirements {
  hypervisors?: Array<'kvm' | 'qemu' | 'xen'>;
  min_memory?: Size;
  min_disk?: Size;
}

/** How an update (imgagent --update) decides a new generation of a VM came up (docs/formats.md). */
export interface HealthSpec {
  /** text a line of the serial console contains once the machine is up */
  serial: string;
  /** how long to wait for it after the domain starts: 90s, 5m (default 300s) */
  timeout?: string;
}

export interface ImageDoc {
  apiVersion: typeof API_VERSION;
  kind: 'Image';
  name: string;
  label?: string;
  description?: string;
  revision: number;
  parent?: string;
  os?: OsInfo;
  labels?: Record<string, string>;
  packages?: string[];
  boot: BootEntry[];
  devices: Devices;
  disks: Disk[];
  parameters?: Record<string, Parameter>;
  provision?: ProvisionSpec;
  requires?: Requirements;
  health?: HealthSpec;
}

export interface RecordDisk {
  size?: Size;
}

export interface ImageRecordDoc {
  apiVersion: typeof API_VERSION;
  kind: 'ImageRecord';
  name: string;
  image: string;
  description?: string;
  /** how the image was created: free-form metadata written by `imgctl build` */
  build?: Record<string, unknown>;
  provision?: {
    vcpus?: number;
    memory?: Size;
    disks?: Record<string, RecordDisk>;
    nics?: Nic[];
    parameters?: Record<string, unknown>;
  };
}

export interface Interface {
  name: string;
  mac?: string;
  dhcp?: boolean;
  /** address with prefix, e.g. 192.0.2.10/24 or 2001:db8::10/64 */
  ip?: string;
  gateway?: string;
  dns?: string[];
  bridge?: string;
  network?: string;
}

export interface SystemDoc {
  apiVersion: typeof API_VERSION;
  kind: 'System';
  name: string;
  hostname: string;
  image: string;
  record?: string;
  description?: string;
  /** where `imgctl provision` reaches the machine: [user@]host[:port] */
  address?: string;
  interfaces?: Interface[];
  ssh_authorized_keys?: string[];
  parameters?: Record<string, unknown>;
  /** for --replace-self: the disk the image is written over */
  target_disk?: string;
  /** true: the next network boot starts the provisioning ramdisk (cleared when it posts done) */
  netboot?: boolean;
}

export type Layer = 'image' | 'record' | 'system' | 'command line';

export interface PlanDisk {
  id: string;
  use: DiskUse;
  format: Disk['format'];
  /** virtual size of the image's disk, bytes */
  image_size: number;
  /** size the provisioned disk gets, bytes (never smaller than image_size) */
  size: number;
  sha256?: string;
  blob?: boolean;
  url?: string;
}

export interface PlanDoc {
  apiVersion: typeof API_VERSION;
  kind: 'Plan';
  image: {
    name: string;
    revision: number;
    /** the channel reference it was planned from, e.g. web@stable */
    reference?: string;
    /** IMAGE@REV when the plan is of a release (not of the working image) */
    release?: string;
    /** set when that release is deprecated */
    deprecated?: { at: string; reason?: string };
    label?: string;
    os?: OsInfo;
    parent?: string;
  };
  record: string;
  system?: string;
  vm_name: string;
  hostname: string;
  boot: BootEntry[];
  devices: {
    vcpus: number;
    memory: number;
    nics: Nic[];
    graphics: 'none' | 'vnc' | 'spice';
    console: 'serial' | 'none';
  };
  disks: PlanDisk[];
  interfaces: Interface[];
  ssh_authorized_keys: string[];
  target_disk?: string;
  parameters: Record<string, unknown>;
  /** which layer gave each parameter its value */
  parameter_sources: Record<string, Layer | 'computed'>;
  /** names of secret parameters; their values are redacted in every output */
  secrets: string[];
  variables: Record<string, string>;
  provision: { script?: string; custom_scripts: string[]; kickstart?: string };
  requires?: Requirements;
  health?: HealthSpec;
  /** the store's blob_mirrors: registries the agent tries for each disk before the server */
  blob_mirrors?: string[];
}
