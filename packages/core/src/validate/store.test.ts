import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { formatProblem } from '../yaml/document.ts';
import { validateStore } from './store.ts';
import {
  edit,
  GOOD_STORE,
  IMAGE,
  makeStore,
  RECORD,
  SYSTEM,
} from '../../../../test/helpers/validate-documents.ts';

async function storeProblems(
  tree: Record<string, string>,
  options?: { images?: string[] },
): Promise<string[]> {
  return (await validateStore(await makeStore(tree), options)).problems.map(formatProblem);
}

describe('validateStore', () => {
  it('accepts a valid store and counts what it read', async () => {
    const result = await validateStore(await makeStore(GOOD_STORE));
    expect(result.problems.map(formatProblem)).toEqual([]);
    expect(result.counts).toEqual({ images: 1, records: 2, systems: 1 });
  });

  it('finds custom script sets in the store too, and reports missing ones', async () => {
    const tree = {
      ...GOOD_STORE,
      'images/web/image.yaml': edit(
        IMAGE,
        'custom_scripts: [base]',
        'custom_scripts: [base, shared, nope]',
      ),
    };
    expect(await storeProblems({ ...tree, 'custom_scripts/shared/10-a.sh': '' })).toEqual([
      "images/web/image.yaml:38:34 provision.custom_scripts[2]: custom script set 'nope' not found in images/web/custom_scripts/ or custom_scripts/",
    ]);
  });

  it('reports a named provision script or kickstart that is missing', async () => {
    const tree = {
      ...GOOD_STORE,
      'images/web/image.yaml': `${IMAGE}  script: setup.sh\n  kickstart: web.ks\n`,
    };
    expect(await storeProblems({ ...tree, 'images/web/web.ks': 'text\n' })).toEqual([
      'images/web/image.yaml:39:11 provision.script: setup.sh does not exist in images/web/',
    ]);
  });

  it('reports an image directory without image.yaml and its records', async () => {
    const problems = await storeProblems({
      ...GOOD_STORE,
      'images/db/records/default.yaml':
        'apiVersion: imgctl/v1\nkind: ImageRecord\nname: default\nimage: db\n',
    });
    expect(problems).toEqual([
      'images/db/image.yaml:1:1 (document): image directory images/db has no image.yaml',
      'images/db/records/default.yaml:4:8 image: record of a missing image: images/db/image.yaml does not exist',
    ]);
  });

  it('refuses overrides of parameters that are not customizable, computed or not declared, naming the layer', async () => {
    const record = edit(
      RECORD,
      '    port: 8080',
      '    port: 8080\n    edition: enterprise\n    colour: blue',
    );
    const system = edit(SYSTEM, '  port: 8081', '  port: "x"\n  edition: pro\n  url: http://x/');
    expect(
      await storeProblems({
        ...GOOD_STORE,
        'images/web/records/large.yaml': record,
        'systems/web1.yaml': system,
      }),
    ).toEqual([
      "images/web/records/large.yaml:13:5 provision.parameters.edition: parameter 'edition' is not customizable (set by record 'large')",
      "images/web/records/large.yaml:14:5 provision.parameters.colour: parameter 'colour' is not declared by image 'web'",
      "systems/web1.yaml:16:9 parameters.port: must be an integer (parameter type integer; got 'x')",
      "systems/web1.yaml:17:3 parameters.edition: parameter 'edition' is not customizable (set by system 'web1')",
      "systems/web1.yaml:18:3 parameters.url: parameter 'url' is computed by the image (set by system 'web1')",
    ]);
  });

  it("never echoes a secret parameter's value in a type error", async () => {
    const image = edit(IMAGE, '  url:\n', '  pin:\n    type: integer\n    secret: true\n  url:\n');
    const record = edit(RECORD, '    port: 8080', '    port: 8080\n    pin: abc123');
    const problems = await storeProblems({
      ...GOOD_STORE,
      'images/web/image.yaml': image,
      'images/web/records/large.yaml': record,
    });
    expect(problems).toEqual([
      'images/web/records/large.yaml:13:10 provision.parameters.pin: must be an integer (parameter type integer; got <redacted>)',
    ]);
  });

  it('refuses unknown disks and disks shrunk below the image', async () => {
    const record = edit(
      RECORD,
      '    data:\n      size: 10GiB',
      '    data:\n      size: 512MiB\n    logs:\n      size: 1GiB',
    );
    expect(await storeProblems({ ...GOOD_STORE, 'images/web/records/large.yaml': record })).toEqual(
      [
        "images/web/records/large.yaml:10:13 provision.disks.data.size: size 512MiB is smaller than the image's disk 'data' (1GiB); disks can grow, not shrink",
        "images/web/records/large.yaml:11:5 provision.disks.logs: unknown disk 'logs' (image 'web' has disks: system, data)",
      ],
    );
  });

  it('reports systems of missing images or records, and shared MACs or hostnames', async () => {
    const web2 = edit(edit(SYSTEM, 'name: web1', 'name: web2'), 'record: large', 'record: huge');
    const db = edit(edit(SYSTEM, 'name: web1', 'name: db'), 'image: web', 'image: db');
    const problems = await storeProblems({
      ...GOOD_STORE,
      'systems/web2.yaml': web2.replace('hostname: web1.example.com', 'hostname: WEB1.example.com'),
      'systems/db.yaml': edit(db, 'hostname: web1.example.com', 'hostname: db').replace(
        /\nparameters:[\s\S]*$/,
        '\n',
      ),
    });
    expect(problems).toEqual([
      "systems/db.yaml:5:8 image: image 'db' does not exist",
      "systems/web1.yaml:9:10 interfaces[0].mac: MAC 52:54:00:12:34:56 is also used by system 'db'",
      "systems/web2.yaml:4:11 hostname: hostname 'WEB1.example.com' is also used by system 'web1'",
      "systems/web2.yaml:6:9 record: image 'web' has no record 'huge' (records: default, large)",
      "systems/web2.yaml:9:10 interfaces[0].mac: MAC 52:54:00:12:34:56 is also used by system 'db'",
    ]);
  });

  it('validates only the named images and the systems that use them', async () => {
    const tree = {
      ...GOOD_STORE,
      'images/api/image.yaml': 'apiVersion: imgctl/v1\nkind: Image\nname: api\n',
      'systems/other.yaml':
        'apiVersion: imgctl/v1\nkind: System\nname: other\nhostname: other\nimage: api\nbogus: 1\n',
    };
    const result = await validateStore(await makeStore(tree), { images: ['web'] });
    expect(result.problems).toEqual([]);
    expect(result.counts).toEqual({ images: 1, records: 2, systems: 1 });
    await expect(validateStore(await makeStore(tree), { images: ['nope'] })).rejects.toMatchObject({
      code: 'NOT_FOUND',
    });
    expect((await storeProblems(tree)).length).toBeGreaterThan(0);
  });

  it('reports a missing store.yaml and validates it', async () => {
    const dir = await makeStore({});
    await rm(join(dir, 'store.yaml'));
    expect((await validateStore(dir)).problems.map(formatProblem)).toEqual([
      'store.yaml:1:1 (document): missing store.yaml: this is not an image store',
    ]);
    expect(
      await storeProblems({
        'store.yaml':
          'apiVersion: imgctl/v1\nkind: ImageStore\nname: lab\nserver:\n  listen: everywhere\n',
      }),
    ).toEqual(['store.yaml:5:11 server.listen: must be [host:]port, like 0.0.0.0:8080']);
  });

  it('validates a store of 1,000 images quickly', async () => {
    const tree: Record<string, string> = {};
    for (let i = 0; i < 1000; i++) {
      tree[`images/img${i}/image.yaml`] = edit(IMAGE, 'name: web', `name: img${i}`);
      tree[`images/img${i}/custom_scripts/base/10-a.sh`] = '';
      tree[`images/img${i}/records/default.yaml`] =
        `apiVersion: imgctl/v1\nkind: ImageRecord\nname: default\nimage: img${i}\n`;
    }
    const dir = await makeStore(tree);
    const started = performance.now();
    const result = await validateStore(dir);
    expect(result.problems).toEqual([]);
    expect(result.counts.images).toBe(1000);
    expect(performance.now() - started).toBeLessThan(5000);
  }, 60_000);
});
