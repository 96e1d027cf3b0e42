// The official openai npm package, unmodified, streaming a response (the Responses API) from the function.
// Usage: node responses_stream.mjs <baseURL> [--max-output-tokens N] [--abort-after N] [--linger-ms MS]
// `client.responses.create({stream: true})`. Prints one JSON line with what the client saw: each event's type,
// sequence number and arrival time (ms since the request started), the text deltas with their arrival times, the
// final response (from its terminal event: id, status, output text, usage), and the error the SDK threw, if any (its class,
// status, type, param, code). With --abort-after N it aborts the request (AbortController) once N text deltas
// arrived, prints, then stays alive --linger-ms so the test sees the abort, not the process exit, close the connection.
import { parseArgs } from "node:util";
import OpenAI from "openai";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    "max-output-tokens": { type: "string" },
    "abort-after": { type: "string" },
    "linger-ms": { type: "string", default: "0" },
  },
});
const abortAfter = values["abort-after"] === undefined ? null : Number(values["abort-after"]);
const maxOutputTokens = values["max-output-tokens"] === undefined ? null : Number(values["max-output-tokens"]);

const client = new OpenAI({
  baseURL: positionals[0],
  apiKey: "not-sent-upstream", // the function never forwards this Authorization header
  maxRetries: 0,
});
const controller = new AbortController();
const seen = { client: "openai", events: [], deltas: [], response: null, error: null };
const ms = (start) => Math.round((performance.now() - start) * 10) / 10;
const TERMINAL = new Set(["response.completed", "response.incomplete", "response.failed"]);

const start = performance.now();
try {
  const stream = await client.responses.create(
    {
      model: "gpt-4o-mini",
      input: "Count slowly.",
      instructions: "Be brief.",
      stream: true,
      ...(maxOutputTokens !== null && { max_output_tokens: maxOutputTokens }),
    },
    { signal: controller.signal },
  );
  for await (const event of stream) {
    const t = ms(start);
    seen.events.push({ t, type: event.type, sequence_number: event.sequence_number });
    if (event.type === "response.output_text.delta") seen.deltas.push({ t, text: event.delta });
    if (TERMINAL.has(event.type)) {
      const { id, status, output, usage } = event.response;
      const parts = output.flatMap((item) => (item.type === "message" ? item.content : []));
      const text = parts.map((part) => (part.type === "output_text" ? part.text : "")).join("");
      seen.response = { id, status, text, usage };
    }
    if (abortAfter !== null && seen.deltas.length >= abortAfter) controller.abort();
  }
} catch (caught) {
  const { status = null, type = null, param = null, code = null } = caught;
  seen.error = { name: caught.constructor.name, message: caught.message, status, type, param, code, t: ms(start) };
}
seen.aborted = controller.signal.aborted;
seen.elapsed_ms = ms(start);
console.log(JSON.stringify(seen));
await new Promise((resolve) => setTimeout(resolve, Number(values["linger-ms"])));
