// The Vercel AI SDK (`ai` with `@ai-sdk/openai` and `@ai-sdk/anthropic`) through
// the Sluice edge, as an app uses it: agent loops (tool call, tool result,
// answer) over several turns, the history carried by the SDK itself. Driven by
// tests/tests/agent_clients.rs against the test upstreams, whose scripted model
// calls the tool a `CALL` line names (origin/tests/upstream/agent.rs).
//
//   node vercel_ai.mjs '{"provider":"responses|chat|anthropic","model":"alias",
//                        "turns":5,"stream":false,"reasoning":"low"|null,"image":false}'
//
// Prints one JSON line per turn; exits non-zero when a turn is wrong.
import { generateText, jsonSchema, stepCountIs, streamText, tool } from 'ai';
import { createAnthropic } from '@ai-sdk/anthropic';
import { createOpenAI } from '@ai-sdk/openai';
import assert from 'node:assert/strict';

const spec = JSON.parse(process.argv[2]);
const edge = process.env.SLUICE_EDGE;
const apiKey = process.env.SLUICE_API_KEY;
const openai = createOpenAI({ baseURL: `${edge}/v1`, apiKey });
const anthropic = createAnthropic({ baseURL: `${edge}/v1`, apiKey });

const model = {
  responses: () => openai(spec.model),
  chat: () => openai.chat(spec.model),
  anthropic: () => anthropic(spec.model),
}[spec.provider]();

const providerOptions = {};
if (spec.reasoning) {
  // The alias does not tell the SDK it names a reasoning model.
  providerOptions.openai = { reasoningEffort: spec.reasoning, forceReasoning: true };
  providerOptions.anthropic = { thinking: { type: 'enabled', budgetTokens: 1024 } };
}

// A 1x1 PNG: what a screenshot tool returns, as the model sees it.
const PNG = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==';

const tools = {
  get_weather: tool({
    description: 'The weather in a city.',
    inputSchema: jsonSchema({
      type: 'object',
      properties: { city: { type: 'string' } },
      required: ['city'],
      additionalProperties: false,
    }),
    execute: async ({ city }) => `sunny in ${city}`,
  }),
  screenshot: tool({
    description: 'A screenshot of the screen.',
    inputSchema: jsonSchema({ type: 'object', properties: {}, additionalProperties: false }),
    execute: async () => 'captured',
    toModelOutput: () => ({
      type: 'content',
      value: [
        { type: 'text', text: 'the screen' },
        { type: 'image-data', data: PNG, mediaType: 'image/png' },
      ],
    }),
  }),
};

const messages = [];
for (let turn = 1; turn <= spec.turns; turn++) {
  const call = spec.image
    ? 'CALL screenshot {}'
    : `CALL get_weather {"city":"City${turn}"}`;
  messages.push({ role: 'user', content: `Turn ${turn}.\n${call}` });
  const options = { model, tools, messages, providerOptions, stopWhen: stepCountIs(4), maxRetries: 0 };
  let text, response, steps;
  if (spec.stream) {
    const result = streamText({
      ...options,
      onError: ({ error }) => { throw error; },
    });
    text = await result.text;
    response = await result.response;
    steps = (await result.steps).length;
  } else {
    const result = await generateText(options);
    ({ text, response } = result);
    steps = result.steps.length;
  }
  console.log(JSON.stringify({ turn, steps, text }));
  assert.equal(steps, 2, `turn ${turn}: a tool step and an answer`);
  assert.match(text, /^Done after 1 tool rounds/, `turn ${turn}`);
  if (spec.image) {
    assert.match(text, /\[image\/png \d+ bytes\]/, 'the image reached the model');
  } else {
    assert.match(text, new RegExp(`sunny in City${turn}`), `turn ${turn}: the tool's result reached the model`);
  }
  messages.push(...response.messages);
}
