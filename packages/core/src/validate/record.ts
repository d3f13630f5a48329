/** The rules of an image record that its schema cannot express. */
import { type Problem, problemAt, type YamlFile } from '../yaml/document.ts';
import { checkSizes } from './image.ts';
import { entries, type Obj, path } from './values.ts';

/** The image the record names is the one it is stored under; memory and disk sizes are exact. */
export function checkRecord(
  y: YamlFile,
  doc: Obj,
  expectedImage: string | undefined,
  out: Problem[],
): void {
  if (expectedImage !== undefined && typeof doc.image === 'string' && doc.image !== expectedImage) {
    out.push(
      problemAt(
        y,
        ['image'],
        `record belongs to image '${doc.image}' but is stored under images/${expectedImage}`,
      ),
    );
  }
  checkSizes(y, doc, [['provision', 'memory']], out, 'memory');
  for (const [id] of entries(path(doc, ['provision', 'disks']))) {
    checkSizes(y, doc, [['provision', 'disks', id, 'size']], out, 'disk');
  }
}
