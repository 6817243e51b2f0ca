// The largest and smallest of a list with a loop: Math.max(...list) passes each value as an
// argument, and V8 throws RangeError past about 125,000 of them (a big trace or graph has more).
// No DOM here: Node's test runner imports it.

/** The largest of `values` (any iterable of numbers), or `floor` when it is larger or there are
 * none. Example: largest([3, 9, 4]) is 9, largest([], 1) is 1. */
export function largest(values, floor = -Infinity) {
  let result = floor;
  for (const value of values) if (value > result) result = value;
  return result;
}

/** The smallest of `values`, or `ceiling` when it is smaller or there are none.
 * Example: smallest([3, 9, 4]) is 3, smallest([]) is Infinity. */
export function smallest(values, ceiling = Infinity) {
  let result = ceiling;
  for (const value of values) if (value < result) result = value;
  return result;
}
