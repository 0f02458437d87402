"""The official openai and anthropic SDKs through the Sluice edge against a
cloud provider's test upstream (origin/tests/upstream/clouds.rs): plain,
streamed, a two-turn tool loop, an image and structured output on chat
completions; plain, streamed and a tool loop continued by
previous_response_id on Responses; embeddings; and plain, streamed, tool
loop and image on Messages. The Rust side (tests/tests/cloud_providers.rs) checks what the
upstream received.

    clouds.py CHAT_MODEL [EMBEDDINGS_MODEL]
"""
import base64
import os
import sys

import anthropic
import openai
import pydantic

edge = os.environ["SLUICE_EDGE"]
key = os.environ["SLUICE_API_KEY"]
model = sys.argv[1]
embed_model = sys.argv[2] if len(sys.argv) > 2 else None
oai = openai.OpenAI(base_url=f"{edge}/v1", api_key=key, max_retries=0)
ant = anthropic.Anthropic(base_url=edge, api_key=key, max_retries=0)
PNG = base64.b64encode(bytes.fromhex("89504e470d0a1a0a0000000d49484452")).decode()
LOOKUP = {
    "name": "lookup",
    "description": "Looks a word up.",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
}

# Plain and streamed.
chat = oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello"}])
assert chat.choices[0].message.content, chat
assert chat.usage.total_tokens > 0, chat
text, usage = "", None
for chunk in oai.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "hello"}], stream=True,
    stream_options={"include_usage": True},
):
    if chunk.choices and chunk.choices[0].delta.content:
        text += chunk.choices[0].delta.content
    usage = chunk.usage or usage
assert text, "a stream with no text"
assert usage and usage.completion_tokens > 0, usage

# A tool loop over two turns, the assistant message sent back as the SDK returned it.
messages = [{"role": "system", "content": "Use the tool."}, {"role": "user", "content": "look up a and b"}]
tools = [{"type": "function", "function": LOOKUP}]
first = oai.chat.completions.create(model=model, messages=messages, tools=tools)
assert first.choices[0].finish_reason == "tool_calls", first
calls = first.choices[0].message.tool_calls
assert [c.function.name for c in calls] == ["lookup", "lookup"], calls
messages.append(first.choices[0].message.model_dump(exclude_none=True))
for call in reversed(calls):  # answered out of order on purpose
    messages.append({"role": "tool", "tool_call_id": call.id, "content": f'{{"found": "{call.function.arguments}"}}'})
second = oai.chat.completions.create(model=model, messages=messages, tools=tools)
assert second.choices[0].finish_reason == "stop", second
assert second.choices[0].message.content, second

# Streamed tool calls arrive with their ids and whole arguments.
streamed = {}
for chunk in oai.chat.completions.create(model=model, messages=messages[:2], tools=tools, stream=True):
    for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
        entry = streamed.setdefault(call.index, {"id": call.id, "arguments": ""})
        entry["arguments"] += call.function.arguments or ""
assert len(streamed) == 2 and all(c["id"] for c in streamed.values()), streamed

# An image.
seen = oai.chat.completions.create(model=model, messages=[{"role": "user", "content": [
    {"type": "text", "text": "what is this?"},
    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
]}])
assert seen.choices[0].message.content, seen


# Structured output, parsed by the SDK.
class Answer(pydantic.BaseModel):
    city: str
    population: int


parsed = oai.chat.completions.parse(
    model=model, messages=[{"role": "user", "content": "largest city?"}], response_format=Answer,
)
assert isinstance(parsed.choices[0].message.parsed, Answer), parsed

# Responses: plain, streamed, and a tool loop continued by previous_response_id.
reply = oai.responses.create(model=model, input="hello")
assert reply.output_text, reply
with oai.responses.stream(model=model, input="hello") as events:
    done = events.get_final_response()
assert done.output_text and done.usage.output_tokens > 0, done
FUNCTION = {"type": "function", **LOOKUP}
asked = oai.responses.create(model=model, input="look up a and b", tools=[FUNCTION])
pending = [i for i in asked.output if i.type == "function_call"]
assert len(pending) == 2, asked
followed = oai.responses.create(
    model=model, previous_response_id=asked.id, tools=[FUNCTION],
    input=[{"type": "function_call_output", "call_id": c.call_id, "output": f"found {c.arguments}"} for c in pending],
)
assert followed.output_text, followed

if embed_model:
    vectors = oai.embeddings.create(model=embed_model, input=["one", "two"])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 3, vectors

# Messages: plain, streamed, a tool loop and an image.
message = ant.messages.create(model=model, max_tokens=200, messages=[{"role": "user", "content": "hello"}])
assert message.content[0].text, message
with ant.messages.stream(model=model, max_tokens=200, messages=[{"role": "user", "content": "hello"}]) as events:
    final = events.get_final_message()
assert final.content[0].text and final.usage.output_tokens > 0, final
ant_tools = [{"name": "lookup", "description": "Looks a word up.", "input_schema": LOOKUP["parameters"]}]
turns = [{"role": "user", "content": "look up a and b"}]
used = ant.messages.create(model=model, max_tokens=200, tools=ant_tools, messages=turns)
assert used.stop_reason == "tool_use", used
uses = [b for b in used.content if b.type == "tool_use"]
turns.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in used.content]})
turns.append({"role": "user", "content": [
    {"type": "tool_result", "tool_use_id": u.id, "content": f"found {u.input['q']}"} for u in uses
]})
answered = ant.messages.create(model=model, max_tokens=200, tools=ant_tools, messages=turns)
assert answered.stop_reason == "end_turn" and answered.content[-1].text, answered
looked = ant.messages.create(model=model, max_tokens=200, messages=[{"role": "user", "content": [
    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
    {"type": "text", "text": "what is this?"},
]}])
assert looked.content[0].text, looked
print("ok", model)
