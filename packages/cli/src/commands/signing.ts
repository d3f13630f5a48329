import type { CommandSpec } from '../command.ts';

/** Signing plans: make the key pair, sign a saved plan, check one offline. */
export const signingCommands: CommandSpec[] = [
  {
    path: ['keygen'],
    summary: 'make an ed25519 key pair for signing plans (and set signing_key in store.yaml)',
    options: [
      {
        flags: '-o, --output <file>',
        description:
          'write the private key here and the public key to FILE.pub (default: .state/keys/signing.key in the store, which becomes its signing_key)',
      },
      { flags: '--force', description: 'replace an existing key' },
    ],
    examples: ['imgctl keygen', 'imgctl keygen -o /etc/imgctl/signing.key'],
    load: () => import('./keygen.ts'),
  },
  {
    path: ['sign'],
    summary: 'sign a saved plan with the store key, or check a signed plan offline (--verify)',
    args: ['<file>'],
    options: [
      {
        flags: '--verify',
        description: 'check the signature of a signed plan instead of signing (exit 7 on mismatch)',
      },
      { flags: '--key <file>', description: 'the public key (--verify) or private key (signing)' },
      { flags: '-o, --output <file>', description: 'write the signed plan here (default: stdout)' },
      {
        flags: '--ttl <duration>',
        description:
          "how long the signature is valid: 90s, 15m, 1h, 30d (default: store.yaml's signature_ttl, else 1h)",
      },
    ],
    examples: [
      'imgctl plan web --system web01 --json > plan.json && imgctl sign plan.json -o plan.signed.json',
      'imgctl sign --verify plan.signed.json --key signing.key.pub',
      'imgctl sign plan.json --ttl 30d -o plan.signed.json   # for a machine offline for weeks',
    ],
    load: () => import('./sign.ts'),
  },
];
