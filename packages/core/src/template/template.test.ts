import { describe, expect, it } from 'vitest';
import { ImgctlError } from '../util/errors.ts';
import { checkTemplate, renderTemplate, shellQuote, templateVariables } from './template.ts';

function renderError(
  source: string,
  context: Record<string, unknown> = {},
  name = 'kickstart.ks',
): ImgctlError {
  try {
    renderTemplate(source, context, { name });
  } catch (error) {
    expect(error).toBeInstanceOf(ImgctlError);
    return error as ImgctlError;
  }
  throw new Error(`rendered without error: ${source}`);
}

describe('renderTemplate', () => {
  it('renders loops, conditionals and filters', () => {
    const source = [
      '{% for nic in interfaces %}network --device={{ nic.name }}{% if nic.dhcp %} --bootproto=dhcp{% else %} --ip={{ nic.ip }}{% endif %}',
      '{% endfor %}rootpw {{ password | quote }}',
      'services --enabled={{ services | join: "," | upper }}',
    ].join('\n');
    const out = renderTemplate(source, {
      interfaces: [
        { name: 'eth0', dhcp: true },
        { name: 'eth1', ip: '192.0.2.10' },
      ],
      password: "it's secret",
      services: ['sshd', 'httpd'],
    });
    expect(out).toBe(
      [
        'network --device=eth0 --bootproto=dhcp',
        'network --device=eth1 --ip=192.0.2.10',
        `rootpw 'it'"'"'s secret'`,
        'services --enabled=SSHD,HTTPD',
      ].join('\n'),
    );
  });

  it('offers the Jinja and Ansible filter names', () => {
    expect(
      renderTemplate('{{ a | lower }}|{{ a | trim }}|{{ l | length }}|{{ n | int | plus: 1 }}', {
        a: ' AB ',
        l: [1, 2, 3],
        n: '41',
      }),
    ).toBe(' ab |AB|3|42');
    expect(renderTemplate('{{ m | to_json }}', { m: { a: [1, 'x'] } })).toBe('{"a":[1,"x"]}');
    expect(renderTemplate('{{ m | to_yaml }}', { m: { a: 1 } })).toBe('a: 1');
    expect(renderTemplate('x:\n  {{ body | indent: 2 }}', { body: 'a\nb\n\nc' })).toBe(
      'x:\n  a\n  b\n\n  c',
    );
    expect(renderTemplate('{{ missing | default: "fallback" }}', {})).toBe('fallback');
    expect(renderTemplate('part / --size={{ root | mib }}', { root: '2GiB' })).toBe(
      'part / --size=2048',
    );
    expect(renderTemplate('{{ l | quote }}', { l: ['a b', 'c;d', 'plain'] })).toBe(
      "'a b' 'c;d' plain",
    );
  });

  it('treats "" and 0 as false, as Jinja does', () => {
    expect(
      renderTemplate('{% if s %}S{% endif %}{% if z %}Z{% endif %}{% if t %}T{% endif %}', {
        s: '',
        z: 0,
        t: 'x',
      }),
    ).toBe('T');
  });

  it('reports an undefined variable by name, file, line and column', () => {
    const error = renderError('line one\n  {{ hostnme }}', { hostname: 'web1' });
    expect(error.code).toBe('VALIDATION');
    expect(error.message).toBe('kickstart.ks:2:6: undefined variable: hostnme');
  });

  it('reports an unknown filter', () => {
    expect(renderError('{{ a | uppercase }}', { a: 'x' }).message).toBe(
      'kickstart.ks:1:1: undefined filter: uppercase',
    );
  });

  it('reports a syntax error with its position', () => {
    expect(renderError('ok\n{% if a %}never closed', { a: 1 }).message).toMatch(
      /^kickstart\.ks:2:1: tag \{% if a %\} not closed/,
    );
  });

  it('cannot reach prototypes, constructors or process', () => {
    for (const source of [
      '{{ "".constructor }}',
      '{{ s.constructor }}',
      '{{ o.constructor.constructor }}',
      '{{ o.__proto__ }}',
      '{{ o["constructor"] }}',
      '{{ process }}',
      '{{ global.process }}',
    ]) {
      expect(renderError(source, { s: 'x', o: {} }).message).toMatch(/undefined variable/);
    }
    // Filters that read properties see own properties only.
    expect(renderTemplate('{{ l | map: "constructor" | join: "," }}', { l: [{}, {}] })).not.toMatch(
      /function/i,
    );
  });

  it('refuses include, render and layout: templates read no files', () => {
    for (const tag of ['include', 'render', 'layout']) {
      const error = renderError(`{% ${tag} "/etc/passwd" %}`);
      expect(error.message).toBe(
        `kickstart.ks:1:1: {% ${tag} %} is not available: templates cannot read other files`,
      );
    }
  });

  it('bounds a huge loop instead of hanging', () => {
    const started = Date.now();
    expect(renderError('{% for i in (1..1000000000) %}{{ i }}{% endfor %}').message).toMatch(
      /limit exceeded/,
    );
    const list = Array.from({ length: 1000 }, (_, i) => i);
    expect(
      renderError(
        '{% for a in l %}{% for b in l %}{% for c in l %}x{% endfor %}{% endfor %}{% endfor %}',
        { l: list },
      ).message,
    ).toMatch(/limit exceeded/);
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('bounds a string that doubles itself', () => {
    const source =
      '{% assign s = "xxxxxxxx" %}{% for i in (1..60) %}{% assign s = s | append: s %}{% endfor %}{{ s | size }}';
    expect(renderError(source).message).toMatch(/memory alloc limit exceeded/);
  });
});

describe('checkTemplate', () => {
  it('returns nothing for a good template and the position of a bad one', () => {
    expect(checkTemplate('{% for x in l %}{{ x | upper }}{% endfor %}')).toEqual([]);
    expect(checkTemplate('a\n{{ x | nosuch }}')).toEqual([
      { line: 2, col: 1, message: 'undefined filter: nosuch' },
    ]);
    expect(checkTemplate('{% include "x" %}')[0]?.message).toMatch(/not available/);
  });
});

describe('templateVariables', () => {
  it('lists what a template reads from its context, not what it assigns', () => {
    expect(
      templateVariables(
        '{{ b }}{% for i in list %}{{ i }}{{ a.x }}{% endfor %}{% assign z = 1 %}{{ z }}',
      ),
    ).toEqual(['a', 'b', 'list']);
  });
});

describe('shellQuote', () => {
  it('quotes like shlex.quote', () => {
    expect(shellQuote('')).toBe("''");
    expect(shellQuote('abc-1.2/x:y@z%+=,')).toBe('abc-1.2/x:y@z%+=,');
    expect(shellQuote('$(rm -rf /)')).toBe("'$(rm -rf /)'");
    expect(shellQuote("a'b")).toBe(`'a'"'"'b'`);
  });
});
