// The life of the page on show. The router ends it before it shows the next page: what the old
// page still waits for is cancelled (its requests are aborted) and the code that awaited it never
// resumes, so a page that is gone cannot write into the one now shown (the views look their
// elements up by id, and the next page may have the same ids).

let current = new AbortController();

/** Ends the page on show and starts the next one: the router calls it before each page. */
export function nextPage() {
  current.abort();
  current = new AbortController();
}

/** The AbortSignal of the page on show: aborted when the page is left. */
export function pageSignal() {
  return current.signal;
}

/** `promise` while the page on show now stays on show: once it is left, the promise returned
 * never settles, and the code awaiting it never resumes (nothing else holds it: it is collected). */
export function whileShown(promise) {
  const { signal } = current;
  return settledWhile(promise, () => !signal.aborted);
}

/** For a part of the page loaded anew on each change (the operations of the service chosen, the
 * span names of a service): `const newest = newestOnly(); ... await newest(api(...))`. A load
 * that a later one replaced never resumes, so an old answer arriving last is not shown. */
export function newestOnly() {
  let newest = 0;
  return (promise) => {
    const mine = ++newest;
    return settledWhile(promise, () => mine === newest);
  };
}

function settledWhile(promise, wanted) {
  return new Promise((resolve, reject) => {
    promise.then(
      (value) => { if (wanted()) resolve(value); },
      (error) => { if (wanted()) reject(error); });
  });
}
