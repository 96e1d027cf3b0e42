// The Vercel AI SDK's streamText through its OpenAI-compatible provider, against the function's API.
// Usage: node ai_sdk_stream.mjs <baseURL> [--include-usage]
// The provider gets only what a user must give (name, baseURL, apiKey); --include-usage adds `includeUsage: true`,
// without which the provider sends no `stream_options`. Prints one JSON line with what the SDK saw: each textStream
// part's text and arrival time (ms since streamText was called), the finish reason, the usage, and any error.
import { parseArgs } from "node:util";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { streamText } from "ai";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { "include-usage": { type: "boolean", default: false } },
});

const provider = createOpenAICompatible({
  name: "lambda-chat",
  baseURL: positionals[0],
  apiKey: "not-sent-upstream",
  ...(values["include-usage"] && { includeUsage: true }),
});
const seen = { client: "ai-sdk", chunks: [], finish_reason: null, usage: null, error: null };
const ms = (start) => Math.round((performance.now() - start) * 10) / 10;
// An error part may hold a plain object (the stream's error event, as sent) rather than an Error: say which.
const describe = (caught) => ({
  name: caught instanceof Error ? caught.constructor.name : typeof caught,
  message: String(caught?.message ?? caught),
  type: caught?.type ?? null,
});

const start = performance.now();
try {
  const result = streamText({
    model: provider.chatModel("gpt-4o-mini"),
    prompt: "Say hi",
    onError: ({ error }) => {
      seen.error = { ...describe(error), t: ms(start) };
    },
  });
  for await (const text of result.textStream) seen.chunks.push({ t: ms(start), text });
  seen.finish_reason = await result.finishReason;
  const usage = await result.usage;
  seen.usage = {
    inputTokens: usage.inputTokens ?? null,
    outputTokens: usage.outputTokens ?? null,
    totalTokens: usage.totalTokens ?? null,
  };
} catch (caught) {
  seen.error ??= { ...describe(caught), t: ms(start) };
}
seen.elapsed_ms = ms(start);
console.log(JSON.stringify(seen));
