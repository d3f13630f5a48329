import { resolve } from 'node:path';
import { type PushProgress, pushImage, type PushResult } from '@imgctl/core/disks/push';
import {
  type ContainerDiskPushResult,
  pushContainerDisk,
} from '@imgctl/core/disks/push-containerdisk';
import type { RegistryOptions } from '@imgctl/core/registry/types';
import { ImgctlError } from '@imgctl/core/util/errors';
import { humanSize, parseSize } from '@imgctl/core/util/sizes';
import type { Context, Handler } from '../command.ts';
import { withProgress } from '../progress.ts';

/** The flags of every command that talks to a registry (push, import oci://). */
export interface RegistryFlags {
  registryAuth?: string;
  registryCa?: string;
  insecureHttp?: boolean;
}

export interface PushOptions extends RegistryFlags {
  chunkSize?: string;
  segmentSize?: string;
  mountFrom?: string[];
  containerdisk?: boolean;
}

/** The registry client's options from the flags: files relative to the working directory. */
export function registryOptions(flags: RegistryFlags, ctx: Context): RegistryOptions {
  return {
    authFile:
      flags.registryAuth === undefined ? undefined : resolve(ctx.io.cwd, flags.registryAuth),
    caFile: flags.registryCa === undefined ? undefined : resolve(ctx.io.cwd, flags.registryCa),
    insecureHttp: Boolean(flags.insecureHttp),
    log: ctx.log,
  };
}

function sizeFlag(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  try {
    return parseSize(value);
  } catch {
    throw new ImgctlError('USAGE', `${flag} takes a size like 64MiB or 16GiB, not '${value}'`);
  }
}

/** SOURCE_DATE_EPOCH (seconds), the `created` of a pushed working image. */
function sourceDate(value: string | undefined): Date | undefined {
  if (value === undefined || value === '') return undefined;
  if (!/^\d{1,12}$/.test(value))
    throw new ImgctlError('USAGE', `SOURCE_DATE_EPOCH must be whole seconds, not '${value}'`);
  return new Date(Number(value) * 1000);
}

/**
 * Ctrl-C (or SIGTERM) once: the chunk in flight is finished and the push stops, so the next one
 * resumes there (a registry may drop an upload whose PATCH was cut); twice: the signal's default,
 * the process ends at once.
 */
function stopOnSignals(ctx: Context) {
  const windDown = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => {
    if (windDown.signal.aborted) {
      dispose();
      process.kill(process.pid, signal);
      return;
    }
    ctx.io.stderr.write(
      'imgctl: interrupted: stopping after the chunk being sent, so the next push resumes there (again to stop at once)\n',
    );
    windDown.abort();
  };
  const dispose = () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return { windDown: windDown.signal, dispose };
}

export const run: Handler<PushOptions> = async ([ref, target], options, ctx) => {
  if (options.containerdisk && options.segmentSize !== undefined)
    throw new ImgctlError('USAGE', '--segment-size does not go with --containerdisk', {
      hint: 'a containerDisk is one layer holding the whole disk, as KubeVirt reads it',
    });
  const storeDir = await ctx.storeDir();
  const chunkSize = sizeFlag(options.chunkSize, '--chunk-size');
  const segmentSize = sizeFlag(options.segmentSize, '--segment-size');
  const created = sourceDate(ctx.io.env.SOURCE_DATE_EPOCH);
  const stop = stopOnSignals(ctx);
  const result = await withProgress(ctx, {}, (progress) => {
    let step = '';
    const session = {
      registry: {
        ...registryOptions(options, ctx),
        chunkSize,
        windDown: stop.windDown,
      },
      mountFrom: options.mountFrom,
      created,
      onProgress: (p: PushProgress) => {
        if (p.step !== step) {
          step = p.step;
          progress.step(p.step.startsWith('hashing') ? p.step : `pushing ${p.step}`);
        }
        progress.bytes(p.done, p.total);
      },
    };
    return options.containerdisk
      ? pushContainerDisk(storeDir, ref!, target!, session)
      : pushImage(storeDir, ref!, target!, { ...session, segmentSize });
  }).finally(stop.dispose);
  return { data: result, text: renderPush(result) };
};

function renderPush(result: PushResult | ContainerDiskPushResult): string {
  const width = Math.max(...result.blobs.map((b) => b.what.length));
  const lines = [
    `pushed ${result.release ?? result.image} (revision ${result.revision}) to ${result.reference}`,
  ];
  if ('containerDisk' in result) {
    const cd = result.containerDisk;
    lines.push(
      `a KubeVirt containerDisk (${cd.architecture}) of disk ${cd.disk}: ${cd.path}, ${cd.format}, ${humanSize(cd.size)}, sha256 ${cd.sha256}`,
    );
    if (cd.leftOut.length > 0)
      lines.push(
        `not in it: ${cd.leftOut.map((d) => `disk ${d.id} (${d.use})`).join(', ')} — a containerDisk holds the boot disk only`,
      );
  }
  lines.push(
    ...result.blobs.map(
      (b) =>
        `  ${b.what.padEnd(width)}  ${humanSize(b.size).padStart(10)}  ${b.how}${
          b.how === 'uploaded' && b.sentBytes !== b.size ? ` (${humanSize(b.sentBytes)} sent)` : ''
        }`,
    ),
    `sent ${humanSize(result.sentBytes)}`,
  );
  if ('diskIndexes' in result)
    for (const tag of result.diskIndexes ?? [])
      lines.push(`disk index ${tag} (how agents find a disk pushed in segments)`);
  if ('signature' in result && result.signature)
    lines.push(
      `signature ${result.signature.digest} (key ${result.signature.keyId}, until ${result.signature.expiresAt}${result.signature.reused ? ', already there' : ''})`,
    );
  return lines.join('\n');
}
