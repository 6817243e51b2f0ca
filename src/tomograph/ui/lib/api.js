// The collector's Zipkin v2 API, and the access token it may want.
//
// A collector started with --token wants "Authorization: Bearer <token>" on every API call.
// The token comes from a link (`tomograph serve` prints one: ...#/?token=...; the fragment is
// never sent to the server) or from a prompt on the first 401, and is kept in sessionStorage:
// for this tab's session only, never in the address bar, the history or a bookmark.

import { pageSignal, whileShown } from "./page-life.js";

/** Where the API lives, relative to the page's origin. */
export const API = "/api/v2";

const TOKEN_KEY = "tomograph.token";

/** The access token of this tab's session, or null. */
export function token() { return sessionStorage.getItem(TOKEN_KEY); }

/** Moves a token out of the address ("#/?token=T" or "#/trace/ID?token=T") into the session. */
export function takeTokenFromLink() {
  const hash = location.hash.replace(/^#/, "");
  const question = hash.indexOf("?");
  let route, query;
  if (hash.startsWith("token=")) [route, query] = ["/", hash];
  else if (question >= 0) [route, query] = [hash.slice(0, question), hash.slice(question + 1)];
  else return;
  const parts = query.split("&");
  const given = parts.find((part) => part.startsWith("token="));
  if (given === undefined) return;
  let value = "";
  try { value = decodeURIComponent(given.slice("token=".length)).trim(); } catch (_) { /* bad %-escape */ }
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  const kept = parts.filter((part) => part && !part.startsWith("token="));
  const cleaned = `#${route || "/"}${kept.length ? `?${kept.join("&")}` : ""}`;
  history.replaceState(history.state, "", `${location.pathname}${location.search}${cleaned}`);
}

let asking = null;    // one prompt for the requests that fail together
let declined = false; // the user cancelled the prompt: do not ask again on this page
function askForToken(refused) {
  if (!asking) {
    asking = Promise.resolve().then(() => {
      const entered = (prompt(refused ? "The collector refused the access token. Access token:" : "This collector needs an access token:") || "").trim();
      if (entered) sessionStorage.setItem(TOKEN_KEY, entered); else declined = true;
      return Boolean(entered);
    }).finally(() => { asking = null; });
  }
  return asking;
}

/**
 * GET `API + path` with `params` (empty values left out) and the session's token; the parsed JSON.
 * A failure throws an Error with the collector's message and `status`. Leaving the page aborts
 * the request, and the caller's code after it never runs (lib/page-life.js).
 */
export function api(path, params) {
  return whileShown(request(path, params, pageSignal()));
}

async function request(path, params, signal) {
  const url = new URL(API + path, location.origin);
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
  }
  const sent = token();
  const response = await fetch(url, { headers: sent ? { Authorization: `Bearer ${sent}` } : {}, signal });
  if (response.status === 401) {
    if (token() !== sent) return request(path, params, signal);  // a token arrived while this one was out
    if (!declined && await askForToken(Boolean(sent))) return request(path, params, signal);
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return response.json();
}
