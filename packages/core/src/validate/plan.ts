/** The rules of a plan that its schema cannot express. */
import { type Problem, problemAt, type YamlFile } from '../yaml/document.ts';
import { checkBoot } from './image.ts';
import { isObject, list, type Obj } from './values.ts';

/** Boot drives name the plan's disks, and no disk is smaller than the image it holds. */
export function checkPlan(y: YamlFile, doc: Obj, out: Problem[]): void {
  checkBoot(y, doc, new Set(list(doc.disks).map((d) => (isObject(d) ? d.id : undefined))), out);
  for (const [i, disk] of list(doc.disks).entries()) {
    if (
      isObject(disk) &&
      typeof disk.size === 'number' &&
      typeof disk.image_size === 'number' &&
      disk.size < disk.image_size
    ) {
      out.push(
        problemAt(
          y,
          ['disks', i, 'size'],
          `size ${disk.size} is smaller than image_size ${disk.image_size}`,
        ),
      );
    }
  }
}
