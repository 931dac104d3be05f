// Which files go into which data object of a format-2 backup (file-list.ts). Pure: the engine
// (file-engine.ts) reads and uploads what this plans.
//
// Files smaller than bundleSize/8 are packed, in list order, into bundles of at most bundleSize
// bytes: thousands of small relation files, visibility maps and configuration files become a few
// objects (one request each, compressed together). Larger files are an object each, so that a
// 1 GiB relation segment is fetched and retried on its own. An object is numbered when it is
// opened, so numbers follow the list order of the first file in each object.

export interface PlannedFile {
  /** Index of the file in the caller's list. */
  index: number;
  /** Size when the data directory was walked: at most this much is read. */
  size: number;
}

export interface PlannedObject {
  /** Object number: its key is dataObjectName(n). */
  n: number;
  /** In offset order. */
  files: PlannedFile[];
  /** Sum of the walked sizes: the most the object will hold. */
  size: number;
  bundle: boolean;
}

/**
 * `groups` (optional, one per file): a bundle holds files of one group only. The engine groups by
 * root (the data directory, each tablespace), so that a restore writes each object into one root.
 */
export function planObjects(sizes: readonly number[], bundleSize: number, groups?: readonly string[]): PlannedObject[] {
  if (!Number.isSafeInteger(bundleSize) || bundleSize < 8) throw new RangeError(`bundle size ${bundleSize} is too small`);
  const threshold = bundleSize / 8;
  const objects: PlannedObject[] = [];
  let open: PlannedObject | undefined;
  let openGroup: string | undefined;
  sizes.forEach((size, index) => {
    if (size >= threshold) {
      objects.push({ n: objects.length, files: [{ index, size }], size, bundle: false });
      return;
    }
    const group = groups?.[index];
    if (!open || open.size + size > bundleSize || group !== openGroup) {
      open = { n: objects.length, files: [], size: 0, bundle: true };
      openGroup = group;
      objects.push(open);
    }
    open.files.push({ index, size });
    open.size += size;
  });
  return objects;
}
