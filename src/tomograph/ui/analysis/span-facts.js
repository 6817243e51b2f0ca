// What the analysis modules read off a Zipkin v2 span.

/** The span's own service, "unknown" when it has none. */
export const serviceOf = (span) => (span.localEndpoint && span.localEndpoint.serviceName) || "unknown";

/** Zipkin shows a span as failed when it has an "error" tag, whatever its value. */
export const isError = (span) => Boolean(span.tags && Object.prototype.hasOwnProperty.call(span.tags, "error"));
