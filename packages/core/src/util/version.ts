import pkg from '../../package.json' with { type: 'json' };

/** The version imgctl and imgagent print for --version; the bundles inline it. */
export const VERSION: string = pkg.version;
