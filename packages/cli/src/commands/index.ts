import type { CommandSpec } from '../command.ts';
import { channelCommands } from './channel.ts';
import { diskCommands } from './disk.ts';
import { imageCommands } from './image.ts';
import { provisionCommands } from './provision-spec.ts';
import { ramdiskCommands } from './ramdisk.ts';
import { recordCommands } from './record.ts';
import { releaseCommands } from './release.ts';
import { serverCommands } from './server.ts';
import { signingCommands } from './signing.ts';
import { systemCommands } from './system.ts';
import { topLevelCommands } from './top-level.ts';

export const allCommands: CommandSpec[] = [
  ...topLevelCommands,
  ...imageCommands,
  ...releaseCommands,
  ...channelCommands,
  ...recordCommands,
  ...systemCommands,
  ...diskCommands,
  ...ramdiskCommands,
  ...serverCommands,
  ...signingCommands,
  ...provisionCommands,
];
