import type { CommandSpec } from '../command.ts';

/** The store served to agents over HTTP, and the provisioning state its events record. */
export const serverCommands: CommandSpec[] = [
  {
    path: ['serve'],
    summary: 'serve the store to agents over HTTP: images, plans, files, blobs, events',
    options: [
      {
        flags: '--listen <[host:]port>',
        description:
          "address to listen on (default: store.yaml's server.listen, else 127.0.0.1:8460)",
      },
      { flags: '--tls-cert <file>', description: 'serve HTTPS with this certificate (PEM)' },
      { flags: '--tls-key <file>', description: 'the private key of --tls-cert (PEM)' },
      {
        flags: '--read-token-file <file>',
        description: 'every read needs this bearer token (and plans then include secrets)',
      },
      {
        flags: '--write-token-file <file>',
        description: 'accept events (POST /v1/events) with this bearer token',
      },
    ],
    examples: [
      'imgctl serve',
      'imgctl serve --listen 0.0.0.0:8460 --write-token-file /etc/imgctl/write.token',
      'imgctl serve --tls-cert server.crt --tls-key server.key --read-token-file read.token',
    ],
    load: () => import('./serve.ts'),
  },
  {
    path: ['status'],
    summary: "each system's provisioning state and phase timings, from the store's events",
    options: [
      { flags: '-s, --system <system>', description: 'only this system, with every phase' },
      {
        flags: '--stalled-after <duration>',
        description: 'a run with no event for this long is stalled (e.g. 90s, 10m, 2h)',
        defaultValue: '10m',
      },
      {
        flags: '--outdated',
        description:
          'only the systems whose image is a release or channel they do not run (the last successful provisioning put another one there)',
      },
    ],
    examples: [
      'imgctl status',
      'imgctl status --system web01',
      'imgctl status --json --stalled-after 5m',
      'imgctl status --outdated   # systems behind the channel they follow',
    ],
    load: () => import('./status.ts'),
  },
];
