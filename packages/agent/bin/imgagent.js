#!/usr/bin/env node
// Runs imgagent from its TypeScript source; `npm run build` makes dist/imgagent.mjs for plain node.
import { register } from 'tsx/esm/api';

register();
const { runBin } = await import('../src/bin.ts');
await runBin();
