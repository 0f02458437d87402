"""Agent loops with the official OpenAI and Anthropic Python SDKs against the
Sluice edge and its simulated provider, which calls an offered tool until it
has the tool's result (README, "The simulated provider"). Run by
tests/tests/edge_to_origin.rs."""
import json
import os
import sys

import anthropic
import openai

edge = os.environ["SLUICE_EDGE"]
key = os.environ["SLUICE_API_KEY"]
model = "sluice-sim-1"

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}

# --- OpenAI: chat completions -------------------------------------------------
oai = openai.OpenAI(base_url=f"{edge}/v1", api_key=key, max_retries=0)
messages = [{"role": "user", "content": "Paris"}]
first = oai.chat.completions.create(model=model, messages=messages, tools=[WEATHER])
assert first.choices[0].finish_reason == "tool_calls", first
call = first.choices[0].message.tool_calls[0]
assert call.function.name == "get_weather", call
assert json.loads(call.function.arguments) == {"city": "Paris"}, call
messages.append(first.choices[0].message.model_dump(exclude_none=True))
messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"})
final = oai.chat.completions.create(model=model, messages=messages, tools=[WEATHER])
assert final.choices[0].finish_reason == "stop", final
assert "sunny, 21 C" in final.choices[0].message.content, final

# Streamed tool-call deltas reassemble into the same call.
stream = oai.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Rome"}], tools=[WEATHER], stream=True
)
calls, finish = {}, None
for chunk in stream:
    for delta in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
        entry = calls.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
        entry["id"] = delta.id or entry["id"]
        if delta.function and delta.function.name:
            entry["name"] = delta.function.name
        entry["arguments"] += (delta.function.arguments or "") if delta.function else ""
    if chunk.choices and chunk.choices[0].finish_reason:
        finish = chunk.choices[0].finish_reason
assert finish == "tool_calls", finish
assert calls[0]["name"] == "get_weather" and calls[0]["id"], calls
assert json.loads(calls[0]["arguments"]) == {"city": "Rome"}, calls

# Structured output, parsed by the SDK.
schema = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city", "days"],
    "additionalProperties": False,
}
structured = oai.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Oslo"}],
    response_format={"type": "json_schema", "json_schema": {"name": "trip", "schema": schema, "strict": True}},
)
assert json.loads(structured.choices[0].message.content) == {"city": "Oslo", "days": 1}, structured

# Image input is accepted and the text part answered.
image = oai.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": [
        {"type": "text", "text": "describe this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]}],
)
assert "describe this" in image.choices[0].message.content, image

# --- OpenAI: responses ----------------------------------------------------------
FN = {"type": "function", **WEATHER["function"]}
first = oai.responses.create(model=model, input="Berlin", tools=[FN], instructions="Use the tool.")
assert first.status == "completed" and first.store is True, first
fn_call = next(item for item in first.output if item.type == "function_call")
assert fn_call.name == "get_weather" and json.loads(fn_call.arguments) == {"city": "Berlin"}, first
# The next turn names only the new item: Sluice holds the conversation.
final = oai.responses.create(
    model=model, previous_response_id=first.id, tools=[FN],
    input=[{"type": "function_call_output", "call_id": fn_call.call_id, "output": "foggy, 9 C"}],
)
assert "foggy, 9 C" in final.output_text, final
assert final.previous_response_id == first.id, final
assert oai.responses.retrieve(final.id).output_text == final.output_text
items = oai.responses.input_items.list(final.id, order="asc")
assert [i.type for i in items.data] == ["message", "function_call", "function_call_output"], items

# Streaming: the SDK's helper assembles the call from the semantic events.
with oai.responses.stream(model=model, input="Vienna", tools=[FN]) as events:
    kinds = [event.type for event in events]
    streamed = events.get_final_response()
assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
assert "response.function_call_arguments.delta" in kinds, kinds
call = next(item for item in streamed.output if item.type == "function_call")
assert json.loads(call.arguments) == {"city": "Vienna"}, streamed
with oai.responses.stream(model=model, input="stream this") as events:
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
assert "stream this" in text, text

# Structured output, and a stored response that only its caller can see.
shaped = oai.responses.create(
    model=model, input="Oslo",
    text={"format": {"type": "json_schema", "name": "trip", "schema": schema, "strict": True}},
)
assert json.loads(shaped.output_text) == {"city": "Oslo", "days": 1}, shaped
other = openai.OpenAI(base_url=f"{edge}/v1", api_key=os.environ["SLUICE_OTHER_KEY"], max_retries=0)
try:
    other.responses.retrieve(shaped.id)
    sys.exit("expected NotFoundError")
except openai.NotFoundError:
    pass
oai.responses.delete(shaped.id)
try:
    oai.responses.retrieve(shaped.id)
    sys.exit("expected NotFoundError after delete")
except openai.NotFoundError:
    pass
try:
    oai.responses.create(model=model, input="x", tools=[{"type": "web_search"}])
    sys.exit("expected BadRequestError")
except openai.BadRequestError as e:
    assert e.body["param"] == "tools[0].type", e.body

# --- Anthropic: messages --------------------------------------------------------
ant = anthropic.Anthropic(base_url=edge, api_key=key, max_retries=0)
TOOL = {
    "name": "get_weather",
    "description": "Current weather in a city.",
    "input_schema": WEATHER["function"]["parameters"],
}
history = [{"role": "user", "content": "Lisbon"}]
reply = ant.messages.create(model=model, max_tokens=256, tools=[TOOL], messages=history)
assert reply.stop_reason == "tool_use", reply
use = next(b for b in reply.content if b.type == "tool_use")
assert use.name == "get_weather" and use.input == {"city": "Lisbon"}, use
history.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in reply.content]})
history.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "rainy"}]})
reply = ant.messages.create(model=model, max_tokens=256, tools=[TOOL], messages=history)
assert reply.stop_reason == "end_turn", reply
assert "rainy" in reply.content[0].text, reply
assert reply.usage.output_tokens > 0, reply

# Streaming with tool use: the SDK assembles the tool input from the deltas.
with ant.messages.stream(
    model=model, max_tokens=256, tools=[TOOL], messages=[{"role": "user", "content": "Madrid"}]
) as events:
    kinds = [event.type for event in events]
    message = events.get_final_message()
assert kinds[0] == "message_start" and "content_block_start" in kinds, kinds
assert message.stop_reason == "tool_use", message
assert message.content[0].input == {"city": "Madrid"}, message

with ant.messages.stream(
    model=model, max_tokens=256, messages=[{"role": "user", "content": "stream me"}]
) as events:
    text = "".join(events.text_stream)
assert "stream me" in text, text

count = ant.messages.count_tokens(model=model, messages=[{"role": "user", "content": "count these words"}])
assert count.input_tokens > 0, count

# Errors are Anthropic's, so the SDK raises its own classes.
try:
    anthropic.Anthropic(base_url=edge, api_key="sk-wrong", max_retries=0).messages.create(
        model=model, max_tokens=10, messages=[{"role": "user", "content": "x"}]
    )
    sys.exit("expected AuthenticationError")
except anthropic.AuthenticationError as e:
    assert e.body["type"] == "error", e.body
    assert e.body["error"]["type"] == "authentication_error", e.body

try:
    ant.messages.create(model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    sys.exit("expected NotFoundError")
except anthropic.NotFoundError as e:
    assert e.body["error"]["type"] == "not_found_error", e.body

print("agent loops passed")
