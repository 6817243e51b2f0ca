// The address's fragment: "#/path?key=value&...".

/** The query parameters of the current route, as a plain object. */
export function routeParams() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  return Object.fromEntries(params.entries());
}
