/** A plan's disks (the image's, grown as the record asks) and devices (vcpus, memory, NICs). */
import { type Problem, problemAt } from '../yaml/document.ts';
import { parseSize } from '../util/sizes.ts';
import type {
  ImageDoc,
  ImageRecordDoc,
  Nic,
  PlanDisk,
  PlanDoc,
  SystemDoc,
} from '../store/types.ts';
import { compact } from '../util/compact.ts';
import { asProblem, type Loaded } from './problems.ts';

/** The image's disks at the sizes the record asks for; a disk never shrinks. */
export function resolveDisks(
  image: Loaded<ImageDoc>,
  record: Loaded<ImageRecordDoc>,
  problems: Problem[],
): PlanDisk[] {
  const wanted = record.value.provision?.disks ?? {};
  const ids = new Set(image.value.disks.map((d) => d.id));
  for (const id of Object.keys(wanted)) {
    if (!ids.has(id)) {
      problems.push(
        problemAt(
          record.yaml,
          ['provision', 'disks', id],
          `record '${record.value.name}' sizes disk '${id}', which image '${image.value.name}' does not have (it has ${[...ids].join(', ') || 'none'})`,
          { key: true },
        ),
      );
    }
  }
  const disks: PlanDisk[] = [];
  for (const [i, disk] of image.value.disks.entries()) {
    let imageSize: number;
    try {
      imageSize = parseSize(disk.size);
    } catch (error) {
      problems.push(asProblem(image.yaml, ['disks', i, 'size'], error));
      continue;
    }
    let size = imageSize;
    const want = Object.hasOwn(wanted, disk.id) ? wanted[disk.id]?.size : undefined;
    if (want !== undefined) {
      try {
        size = parseSize(want);
      } catch (error) {
        problems.push(asProblem(record.yaml, ['provision', 'disks', disk.id, 'size'], error));
        continue;
      }
      if (size < imageSize) {
        problems.push(
          problemAt(
            record.yaml,
            ['provision', 'disks', disk.id, 'size'],
            `record '${record.value.name}' asks for disk '${disk.id}' of ${want}, smaller than the image's ${disk.size}: disks can grow, never shrink`,
          ),
        );
        continue;
      }
    }
    disks.push(
      compact({
        id: disk.id,
        use: disk.use,
        format: disk.format,
        image_size: imageSize,
        size,
        sha256: disk.sha256,
        blob: disk.blob,
        url: disk.url,
      }),
    );
  }
  return disks;
}

/**
 * vcpus and memory from the record over the image; one NIC per system interface (its MAC, bridge
 * or network) over the record's NICs over the image's; a NIC attached to nothing goes on the
 * store's default network, a NIC without a model is virtio.
 */
export function resolveDevices(
  image: ImageDoc,
  record: ImageRecordDoc,
  system: SystemDoc | undefined,
  defaultNetwork: string,
): PlanDoc['devices'] {
  const base: Nic[] = record.provision?.nics ?? image.devices.nics ?? [];
  const interfaces = system?.interfaces ?? [];
  const merged: Nic[] =
    interfaces.length > 0
      ? interfaces.map((iface, i) => {
          const fallback = base[i] ?? base[0];
          const attached = iface.bridge !== undefined || iface.network !== undefined;
          return {
            model: fallback?.model,
            network: attached ? iface.network : fallback?.network,
            bridge: attached ? iface.bridge : fallback?.bridge,
            mac: iface.mac ?? (base[i] === undefined ? undefined : fallback?.mac),
          };
        })
      : base;
  const nics = merged.map((nic) =>
    compact<Nic>({
      model: nic.model ?? 'virtio',
      network: nic.bridge === undefined ? (nic.network ?? defaultNetwork) : undefined,
      bridge: nic.bridge,
      mac: nic.mac,
    }),
  );
  return {
    vcpus: record.provision?.vcpus ?? image.devices.vcpus,
    memory: parseSize(record.provision?.memory ?? image.devices.memory),
    nics,
    graphics: image.devices.graphics ?? 'none',
    console: image.devices.console ?? 'serial',
  };
}
