import type { EditResult } from '@imgctl/core/store/edit';
import type { Result } from '../command.ts';

export function renderEdit(result: EditResult): Result {
  return {
    data: { file: result.file, changed: result.changed },
    text: result.changed ? `updated ${result.file}` : `${result.file} already had those values`,
  };
}
