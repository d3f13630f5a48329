import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { formatProblem, parseYaml } from '../packages/core/src/yaml/document.ts';
import { validateDocument } from '../packages/core/src/validate/document.ts';
import type { DocKind } from '../packages/core/src/validate/schemas.ts';

/** docs/formats.md and schemas/*.json describe the same fields: neither may get ahead. */

const root = fileURLToPath(new URL('..', import.meta.url));
const SCHEMA_FILES: Record<DocKind, string> = {
  ImageStore: 'image-store',
  Image: 'image',
  ImageRecord: 'image-record',
  System: 'system',
  Plan: 'plan',
  Release: 'release',
  Channels: 'channels',
  Ramdisk: 'ramdisk',
};
const KINDS = Object.keys(SCHEMA_FILES) as DocKind[];

interface Schema {
  $ref?: string;
  $defs?: Record<string, Schema>;
  description?: string;
  properties?: Record<string, Schema>;
  items?: Schema | boolean;
  additionalProperties?: Schema | boolean;
  anyOf?: Schema[];
  oneOf?: Schema[];
  allOf?: Schema[];
}

function loadSchema(kind: DocKind): Schema {
  return JSON.parse(
    readFileSync(`${root}/schemas/${SCHEMA_FILES[kind]}.schema.json`, 'utf8'),
  ) as Schema;
}

/**
 * Every field path of a schema with its description: `a.b` for properties, `a[]` for list
 * entries, `a.<*>` for the entries of a map whose keys the user chooses.
 */
function schemaFields(schema: Schema): Map<string, string | undefined> {
  const fields = new Map<string, string | undefined>();
  const walk = (node: Schema, path: string, seen: Set<string>): void => {
    let current = node;
    if (current.$ref) {
      const name = current.$ref.replace('#/$defs/', '');
      if (seen.has(name)) return;
      seen = new Set([...seen, name]);
      current = schema.$defs?.[name] ?? {};
    }
    for (const [key, child] of Object.entries(current.properties ?? {})) {
      const full = path === '' ? key : `${path}.${key}`;
      fields.set(full, child.description);
      walk(child, full, seen);
    }
    if (typeof current.items === 'object') walk(current.items, `${path}[]`, seen);
    if (typeof current.additionalProperties === 'object') {
      const full = `${path}.<*>`;
      fields.set(full, current.additionalProperties.description);
      walk(current.additionalProperties, full, seen);
    }
    for (const branch of [
      ...(current.anyOf ?? []),
      ...(current.oneOf ?? []),
      ...(current.allOf ?? []),
    ]) {
      walk(branch, path, seen);
    }
  };
  walk(schema, '', new Set());
  return fields;
}

interface DocSection {
  fields: Set<string>;
  examples: string[];
}

/** The field-table rows (first cell a `path`) and yaml examples under each `## Kind` heading. */
function docSections(markdown: string): Map<DocKind, DocSection> {
  const sections = new Map<DocKind, DocSection>();
  let current: DocSection | undefined;
  let example: string[] | undefined;
  for (const line of markdown.split('\n')) {
    if (example) {
      if (line.startsWith('```')) {
        current?.examples.push(example.join('\n'));
        example = undefined;
      } else example.push(line);
      continue;
    }
    const heading = /^## (\w+)\s*$/.exec(line);
    if (heading) {
      const kind = heading[1] as DocKind;
      current = KINDS.includes(kind) ? { fields: new Set(), examples: [] } : undefined;
      if (current) sections.set(kind, current);
      continue;
    }
    if (line.startsWith('```yaml')) {
      example = [];
      continue;
    }
    const row = /^\|\s*`([^`]+)`\s*\|/.exec(line);
    if (row && current) current.fields.add(normalize(row[1]!));
  }
  return sections;
}

/** Placeholders may be named for the reader (`<id>`, `<name>`): all compare equal. */
function normalize(path: string): string {
  return path.replace(/<[^>]*>/g, '<*>');
}

const markdown = readFileSync(`${root}/docs/formats.md`, 'utf8');
const sections = docSections(markdown);

describe('docs/formats.md and schemas/*.json', () => {
  for (const kind of KINDS) {
    describe(kind, () => {
      const fields = schemaFields(loadSchema(kind));
      const section = sections.get(kind);

      it('has a section with a field table', () => {
        expect(section, `docs/formats.md needs a '## ${kind}' section`).toBeDefined();
        expect(section!.fields.size).toBeGreaterThan(0);
      });

      it('documents every field of the schema', () => {
        const undocumented = [...fields.keys()].filter((path) => !section?.fields.has(path));
        expect(
          undocumented,
          `fields of schemas/${SCHEMA_FILES[kind]}.schema.json missing from docs/formats.md`,
        ).toEqual([]);
      });

      it('documents no field the schema lacks', () => {
        const unknown = [...(section?.fields ?? [])].filter((path) => !fields.has(path));
        expect(unknown, `fields in docs/formats.md '## ${kind}' that no schema has`).toEqual([]);
      });

      it('gives every field of the schema a description', () => {
        const bare = [...fields].filter(([, description]) => !description).map(([path]) => path);
        expect(bare).toEqual([]);
      });

      it('has an example that is valid', () => {
        expect(section?.examples.length).toBeGreaterThan(0);
        for (const example of section?.examples ?? []) {
          const problems = validateDocument(
            kind,
            parseYaml(`docs/formats.md (${kind} example)`, example),
          );
          expect(problems.map(formatProblem)).toEqual([]);
        }
      });
    });
  }

  it('catches a field missing from the docs (the check itself can fail)', () => {
    const trimmed = markdown.replace(/^\| `devices\.memory` .*\n/m, '');
    expect(trimmed).not.toBe(markdown);
    expect(docSections(trimmed).get('Image')!.fields.has('devices.memory')).toBe(false);
  });
});
