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
  return new Promise((resolve, reject) => {
    promise.then(
      (value) => { if (!signal.aborted) resolve(value); },
      (error) => { if (!signal.aborted) reject(error); });
  });
}
