// The official openai npm package, unmodified, pointed at the function's OpenAI-compatible API.
// Usage: node client.mjs <baseURL>. Prints one JSON line with what the client saw.
import OpenAI from "openai";

const client = new OpenAI({
  baseURL: process.argv[2],
  apiKey: "not-sent-upstream", // the function never forwards this Authorization header
  defaultHeaders: { "x-api-key": "local-api-gateway-key" },
  maxRetries: 0,
});

const completion = await client.chat.completions.create({
  model: "gpt-4o-mini",
  messages: [{ role: "user", content: "Say hi" }],
  max_tokens: 5,
  seed: 7,
});

let error = null;
try {
  await client.chat.completions.create({
    model: "gpt-4o-mini",
    messages: [{ role: "user", content: "Say hi" }],
    temperature: 5,
  });
} catch (caught) {
  error = { name: caught.constructor.name, status: caught.status, param: caught.param, type: caught.type };
}

const models = [];
for await (const model of client.models.list()) models.push(model.id);

console.log(
  JSON.stringify({
    object: completion.object,
    content: completion.choices[0].message.content,
    finish_reason: completion.choices[0].finish_reason,
    usage: completion.usage,
    error,
    models,
  }),
);
