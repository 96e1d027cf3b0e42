// The official openai npm package, unmodified, streaming a chat completion from the function's OpenAI-compatible API.
// Usage: node openai_stream.mjs <baseURL> [--include-usage] [--abort-after N] [--linger-ms MS]
// Prints one JSON line with what the client saw: each content chunk's text and arrival time (ms since the request
// started), the finish reason, the usage (when asked), and the error the SDK threw, if any. With --abort-after N it
// aborts the request (AbortController) once N content chunks arrived (the SDK then ends the iteration quietly, no
// error), prints, then stays alive --linger-ms so the test sees the abort, not the process exit, close the connection.
import { parseArgs } from "node:util";
import OpenAI from "openai";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    "include-usage": { type: "boolean", default: false },
    "abort-after": { type: "string" },
    "linger-ms": { type: "string", default: "0" },
  },
});
const abortAfter = values["abort-after"] === undefined ? null : Number(values["abort-after"]);

const client = new OpenAI({
  baseURL: positionals[0],
  apiKey: "not-sent-upstream", // the function never forwards this Authorization header
  maxRetries: 0,
});
const controller = new AbortController();
const seen = { client: "openai", chunks: [], finish_reason: null, usage: null, error: null };
const ms = (start) => Math.round((performance.now() - start) * 10) / 10;

const start = performance.now();
try {
  const stream = await client.chat.completions.create(
    {
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "Say hi" }],
      stream: true,
      ...(values["include-usage"] && { stream_options: { include_usage: true } }),
    },
    { signal: controller.signal },
  );
  for await (const chunk of stream) {
    const choice = chunk.choices[0];
    if (choice?.delta?.content) seen.chunks.push({ t: ms(start), text: choice.delta.content });
    if (choice?.finish_reason) seen.finish_reason = choice.finish_reason;
    if (chunk.usage) seen.usage = chunk.usage;
    if (abortAfter !== null && seen.chunks.length >= abortAfter) controller.abort();
  }
} catch (caught) {
  seen.error = { name: caught.constructor.name, message: caught.message, t: ms(start) };
}
seen.aborted = controller.signal.aborted;
seen.elapsed_ms = ms(start);
console.log(JSON.stringify(seen));
await new Promise((resolve) => setTimeout(resolve, Number(values["linger-ms"])));
