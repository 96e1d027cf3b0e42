// The official openai npm package, unmodified, creating embeddings through the function.
// Usage: node embeddings.mjs <baseURL> <model> <input JSON> [--encoding-format float|base64]
// `client.embeddings.create({model, input})`. Left to its default, the SDK asks for `encoding_format: "base64"` and
// decodes the vectors (little-endian float32) itself; --encoding-format sends the given format instead. Prints one
// JSON line: the vectors (by index), the model and usage the answer named, and the error the SDK threw, if any.
import { parseArgs } from "node:util";
import OpenAI from "openai";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { "encoding-format": { type: "string" } },
});
const [baseURL, model, input] = positionals;

const client = new OpenAI({
  baseURL,
  apiKey: "not-sent-upstream", // the function never forwards this Authorization header
  maxRetries: 0,
});
const seen = { client: "openai", vectors: null, model: null, usage: null, error: null };

try {
  const result = await client.embeddings.create({
    model,
    input: JSON.parse(input),
    ...(values["encoding-format"] && { encoding_format: values["encoding-format"] }),
  });
  seen.vectors = result.data.map((item) => ({ index: item.index, embedding: item.embedding }));
  seen.model = result.model;
  seen.usage = result.usage;
} catch (caught) {
  const { status = null, type = null, param = null, code = null } = caught;
  seen.error = { name: caught.constructor.name, message: caught.message, status, type, param, code };
}
console.log(JSON.stringify(seen));
