// A line protocol over the browser's trace-file parser, for tests in other languages: each line
// in is a JSON string (a file's text); each line out is {"spans": [...]} (all traces' spans in
// order) or {"error": "message"} for a TraceFileError, or {"crash": "..."} for anything else.
import { createInterface } from "node:readline";
import { TraceFileError, parseTraceFile } from "../../src/tomograph/ui/analysis/upload.js";

for await (const line of createInterface({ input: process.stdin })) {
  let answer;
  try {
    const parsed = parseTraceFile(JSON.parse(line));
    answer = { format: parsed.format, spans: parsed.traces.flatMap((trace) => trace.spans) };
  } catch (error) {
    answer = error instanceof TraceFileError ? { error: error.message } : { crash: String(error && error.stack) };
  }
  process.stdout.write(`${JSON.stringify(answer)}\n`);
}
