#!/usr/bin/env node
// Runs imgctl from its TypeScript source; `npm run build` makes dist/imgctl.mjs for plain node.
import { register } from 'tsx/esm/api';

register();
const { runBin } = await import('../src/bin.ts');
await runBin();
