/**
 * What bench/agent-virt times as the agent's pull: one blob into an empty blob cache through
 * core's cache and client, as the agent does. Bundled by the bench and run with plain node.
 *
 *   node pull-blob.mjs URL SHA256 CACHE_DIR
 */
import { openBlobCache } from '@imgctl/core/agent/blob-cache';
import { createClient } from '@imgctl/core/client/client';

const [url, hex, cacheDir] = process.argv.slice(2);
if (!url || !hex || !cacheDir) throw new Error('usage: pull-blob URL SHA256 CACHE_DIR');
await openBlobCache(cacheDir).ensure(hex, createClient({ baseUrl: url }));
