/**
 * A tiny strict XML reader for descriptors (virt-image, libvirt domains): elements, attributes,
 * text, comments, CDATA and the predefined and numeric character references. DOCTYPE and
 * custom entities are refused, so nothing is fetched or expanded (no XXE, no entity bombs).
 */
import { ImgctlError } from '../util/errors.ts';

export interface XmlElement {
  name: string;
  attrs: Record<string, string>;
  children: XmlElement[];
  /** the element's own text (not its children's), concatenated */
  text: string;
  line: number;
}

const MAX_XML_BYTES = 4 * 1024 * 1024;
const MAX_DEPTH = 64;
const NAME = /[A-Za-z_][A-Za-z0-9_.:-]*/y;

export function parseXml(xml: string, file: string): XmlElement {
  if (xml.length > MAX_XML_BYTES) throw xmlError(file, 1, 'the file is larger than 4 MiB');
  let pos = xml.charCodeAt(0) === 0xfeff ? 1 : 0;
  const lineAt = (at: number) => {
    let line = 1;
    for (let i = 0; i < at; i++) if (xml.charCodeAt(i) === 10) line++;
    return line;
  };
  const fail = (message: string, at = pos): never => {
    throw xmlError(file, lineAt(at), message);
  };
  const skipMisc = () => {
    for (;;) {
      while (pos < xml.length && /\s/.test(xml[pos]!)) pos++;
      if (xml.startsWith('<?', pos)) {
        const end = xml.indexOf('?>', pos);
        if (end < 0) fail('unterminated processing instruction');
        pos = end + 2;
      } else if (xml.startsWith('<!--', pos)) {
        const end = xml.indexOf('-->', pos + 4);
        if (end < 0) fail('unterminated comment');
        pos = end + 3;
      } else if (xml.startsWith('<!', pos) && !xml.startsWith('<![CDATA[', pos)) {
        fail('DOCTYPE and entity declarations are not accepted');
      } else return;
    }
  };
  const readName = (): string => {
    NAME.lastIndex = pos;
    const m = NAME.exec(xml);
    if (!m) fail('expected a name');
    pos += m![0].length;
    return m![0];
  };
  const decode = (text: string, at: number): string =>
    text.replace(/&([^;&\s<]{0,12});?/g, (whole, ref: string) => {
      if (!whole.endsWith(';')) fail(`a bare '&' (write &amp;)`, at);
      const named: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };
      if (named[ref] !== undefined) return named[ref]!;
      const num = /^#(x[0-9a-fA-F]{1,6}|[0-9]{1,7})$/.exec(ref);
      if (!num) fail(`unknown entity &${ref};`, at);
      const code = num![1]!.startsWith('x')
        ? Number.parseInt(num![1]!.slice(1), 16)
        : Number(num![1]);
      if (code === 0 || code > 0x10ffff) fail(`invalid character reference &${ref};`, at);
      return String.fromCodePoint(code);
    });
  const readElement = (depth: number): XmlElement => {
    if (depth > MAX_DEPTH) fail('elements nested too deeply');
    const start = pos;
    pos++; // '<'
    const el: XmlElement = {
      name: readName(),
      attrs: {},
      children: [],
      text: '',
      line: lineAt(start),
    };
    for (;;) {
      const before = pos;
      while (pos < xml.length && /\s/.test(xml[pos]!)) pos++;
      if (xml.startsWith('/>', pos)) {
        pos += 2;
        return el;
      }
      if (xml[pos] === '>') {
        pos++;
        break;
      }
      if (pos === before) fail(`expected whitespace, '>' or '/>' in <${el.name}>`);
      const attr = readName();
      while (/\s/.test(xml[pos] ?? '')) pos++;
      if (xml[pos] !== '=') fail(`attribute ${attr} needs a value`);
      pos++;
      while (/\s/.test(xml[pos] ?? '')) pos++;
      const quote = xml[pos];
      if (quote !== '"' && quote !== "'") fail(`attribute ${attr}: the value must be quoted`);
      const end = xml.indexOf(quote!, pos + 1);
      if (end < 0) fail(`attribute ${attr}: unterminated value`);
      const raw = xml.slice(pos + 1, end);
      if (raw.includes('<')) fail(`attribute ${attr}: '<' in a value`);
      if (Object.hasOwn(el.attrs, attr)) fail(`attribute ${attr} given twice`);
      el.attrs[attr] = decode(raw, pos);
      pos = end + 1;
    }
    for (;;) {
      if (pos >= xml.length) fail(`<${el.name}> is not closed`, start);
      if (xml.startsWith('</', pos)) {
        pos += 2;
        const closing = readName();
        if (closing !== el.name) fail(`</${closing}> closes <${el.name}>`);
        while (/\s/.test(xml[pos] ?? '')) pos++;
        if (xml[pos] !== '>') fail(`expected '>' after </${closing}`);
        pos++;
        return el;
      }
      if (xml.startsWith('<![CDATA[', pos)) {
        const end = xml.indexOf(']]>', pos);
        if (end < 0) fail('unterminated CDATA');
        el.text += xml.slice(pos + 9, end);
        pos = end + 3;
      } else if (xml.startsWith('<!--', pos)) {
        const end = xml.indexOf('-->', pos + 4);
        if (end < 0) fail('unterminated comment');
        pos = end + 3;
      } else if (xml.startsWith('<?', pos)) {
        const end = xml.indexOf('?>', pos);
        if (end < 0) fail('unterminated processing instruction');
        pos = end + 2;
      } else if (xml.startsWith('<!', pos)) {
        fail('DOCTYPE and entity declarations are not accepted');
      } else if (xml[pos] === '<') {
        el.children.push(readElement(depth + 1));
      } else {
        const next = xml.indexOf('<', pos);
        const end = next < 0 ? xml.length : next;
        el.text += decode(xml.slice(pos, end), pos);
        pos = end;
      }
    }
  };
  skipMisc();
  if (xml[pos] !== '<') fail('no root element');
  const root = readElement(0);
  skipMisc();
  if (pos < xml.length) fail('content after the root element');
  return root;
}

function xmlError(file: string, line: number, message: string): ImgctlError {
  return new ImgctlError('VALIDATION', `${file}:${line}: not a valid descriptor: ${message}`);
}

export function childElements(el: XmlElement, name: string): XmlElement[] {
  return el.children.filter((c) => c.name === name);
}

export function firstChild(el: XmlElement, name: string): XmlElement | undefined {
  return el.children.find((c) => c.name === name);
}

export function textOf(el: XmlElement): string {
  return el.text.trim();
}
