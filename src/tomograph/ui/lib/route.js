// The address's fragment: "#/path?key=value&...".

/** The query parameters of the current route, as a plain object. */
export function routeParams() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  return Object.fromEntries(params.entries());
}

/** The address of a trace search: searchHref({ serviceName: "shop", endTs, lookback }).
 * With an `endTs` the search page shows and runs that exact time range. */
export function searchHref(query) {
  const params = {};
  for (const [key, value] of Object.entries(query)) if (value !== undefined && value !== null && value !== "") params[key] = String(value);
  if (params.endTs) params.custom = "1";
  return `#/?${new URLSearchParams(params)}`;
}
