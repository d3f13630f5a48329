/**
 * What bench/registry runs 200 of at once: one agent's pull of a disk from a registry mirror —
 * the agent's blob cache and the downloader of `--blob-mirror` (mirroredDownloader, the registry
 * client), with no server behind it: a mirror failure is this pull's failure. Bundled by the
 * bench and run with plain node; prints `{"size", "downloaded", "maxRssKb"}` once the blob is in
 * the cache, verified.
 *
 *   node pull-mirror.mjs oci://HOST/PREFIX IMAGE SHA256 CACHE_DIR [AUTH_FILE CA_FILE | --insecure-http]
 */
import { openBlobCache } from '@imgctl/core/agent/blob-cache';
import { mirroredDownloader } from '@imgctl/core/agent/blob-sources';
import { parseOciReference } from '@imgctl/core/registry/reference';
import { openRegistry } from '@imgctl/core/registry/registry';
import type { PlanDoc } from '@imgctl/core/store/types';

const [mirror, image, hex, cacheDir, authOrFlag, caFile] = process.argv.slice(2);
if (!mirror || !image || !hex || !cacheDir)
  throw new Error('usage: pull-mirror MIRROR IMAGE SHA256 CACHE_DIR [AUTH_FILE CA_FILE]');
const insecureHttp = authOrFlag === '--insecure-http';
const log = (line: string) => process.stderr.write(`${line}\n`);
const options = { authFile: insecureHttp ? undefined : authOrFlag, caFile, insecureHttp, log };
const noServer = {
  downloadBlob: () => Promise.reject(new Error('the bench pulls from the registry only')),
};
// The downloader reads only the plan's image name and blob_mirrors (none: --blob-mirror's).
const plan = { image: { name: image } } as PlanDoc;
const source = mirroredDownloader(
  plan,
  noServer,
  { first: [mirror], parse: parseOciReference, open: (ref) => openRegistry(ref, options) },
  log,
);
process.stdout.write('ready\n');
await new Promise((resolve) => process.stdin.once('data', resolve));
process.stdin.destroy();
const start = performance.now();
const pulled = await openBlobCache(cacheDir).ensure(hex, source);
const seconds = (performance.now() - start) / 1000;
const { maxRSS } = process.resourceUsage();
process.stdout.write(
  `${JSON.stringify({ seconds, size: pulled.size, downloaded: pulled.downloaded, maxRssKb: maxRSS })}\n`,
);
