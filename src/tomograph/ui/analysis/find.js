// Finding spans within one trace: the query typed in the trace page's find box, as a predicate.
// Pure: no DOM, so Node's test runner checks it.
//
// A query is words separated by spaces ("double quotes" keep spaces in one word); a span matches
// when every word does, ignoring case:
//   word            in the span's name, service, remote service, a tag's key or value, a note,
//                   or the start of its span id
//   key=value       a tag named key (exactly) whose value holds value; "key=" any value
//   service:word    the service or remote service holds word (also name:, tag:, note:, id:)

const FIELDS = new Set(["service", "name", "tag", "note", "id"]);

/** The words of a query: [{ field, key, value }], lower-cased; [] for a blank query. */
export function parseFindQuery(text) {
  const terms = [];
  const pattern = /"([^"]*)"?|(\S+)/g;
  for (const match of String(text ?? "").matchAll(pattern)) {
    const word = (match[1] ?? match[2]).toLowerCase();
    if (match[1] !== undefined) { if (word) terms.push({ field: "any", value: word }); continue; }
    const colon = word.indexOf(":");
    const equals = word.indexOf("=");
    if (colon > 0 && (equals < 0 || colon < equals) && FIELDS.has(word.slice(0, colon))) {
      const value = word.slice(colon + 1);
      if (value) terms.push({ field: word.slice(0, colon), value });
    } else if (equals > 0) {
      terms.push({ field: "tagValue", key: word.slice(0, equals), value: word.slice(equals + 1) });
    } else {
      terms.push({ field: "any", value: word });
    }
  }
  return terms;
}

const lower = (value) => (value === undefined || value === null ? "" : String(value).toLowerCase());
const holds = (value, word) => lower(value).includes(word);
const endpointName = (endpoint) => (endpoint && endpoint.serviceName) || "";

function termMatches(span, term) {
  const { field, value } = term;
  const tags = span.tags && typeof span.tags === "object" ? Object.entries(span.tags) : [];
  const notes = Array.isArray(span.annotations) ? span.annotations : [];
  const service = () => holds(endpointName(span.localEndpoint), value) || holds(endpointName(span.remoteEndpoint), value);
  const name = () => holds(span.name, value);
  const tag = () => tags.some(([key, tagValue]) => holds(key, value) || holds(tagValue, value));
  const note = () => notes.some((annotation) => annotation && holds(annotation.value, value));
  const id = () => lower(span.id).startsWith(value);
  switch (field) {
    case "service": return service();
    case "name": return name();
    case "tag": return tag();
    case "note": return note();
    case "id": return id();
    case "tagValue": return tags.some(([key, tagValue]) => lower(key) === term.key && holds(tagValue, value));
    default: return name() || service() || tag() || note() || id();
  }
}

/** Whether `span` (Zipkin v2 JSON) matches every word of the parsed `terms` (false for none). */
export function spanMatches(span, terms) {
  return terms.length > 0 && terms.every((term) => termMatches(span, term));
}

/** The items whose span matches `query`, in their order: items are spans, or { span } nodes. */
export function findSpans(items, query) {
  const terms = parseFindQuery(query);
  if (!terms.length) return [];
  return items.filter((item) => spanMatches(item && item.span ? item.span : item, terms));
}
