"""The official SDKs through the Sluice edge against the test upstreams
(origin/tests/upstream: one OpenAI-compatible, one Anthropic), which answer
with tool calls and record what they received; the Rust side
(tests/tests/sdk_upstreams.rs) checks those records. Run in two phases so the
test can break the primary upstream in between:

    upstreams.py first          -> prints the first response's id
    upstreams.py second RESP_ID -> continues it (served by the fallback)
"""
import json
import os
import sys

import anthropic
import openai

edge = os.environ["SLUICE_EDGE"]
key = os.environ["SLUICE_API_KEY"]
oai = openai.OpenAI(base_url=f"{edge}/v1", api_key=key, max_retries=0)
LOOKUP = {
    "type": "function",
    "name": "lookup",
    "description": "Looks a word up.",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
}

if sys.argv[1] == "first":
    # Chat completions against the OpenAI-compatible upstream: parallel tool
    # calls and every field the upstream sent.
    chat = oai.chat.completions.create(
        model="gpt", messages=[{"role": "user", "content": "look up a and b"}],
        tools=[{"type": "function", "function": {k: v for k, v in LOOKUP.items() if k != "type"}}],
    )
    calls = chat.choices[0].message.tool_calls
    assert [c.id for c in calls] == ["call_a", "call_b"], chat
    assert chat.system_fingerprint == "fp_test", chat
    assert chat.model_extra["x_upstream_extra"] == {"kept": True}, chat.model_extra
    assert chat.usage.prompt_tokens_details.cached_tokens == 30, chat.usage

    # Messages against the Anthropic upstream, streamed, with an image and cache_control.
    ant = anthropic.Anthropic(base_url=edge, api_key=key, max_retries=0)
    with ant.messages.stream(
        model="claude", max_tokens=256,
        tools=[{"name": "lookup", "input_schema": LOOKUP["parameters"]}],
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is this?", "cache_control": {"type": "ephemeral"}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        ]}],
    ) as events:
        message = events.get_final_message()
    assert message.stop_reason == "tool_use", message
    assert [b.input for b in message.content if b.type == "tool_use"] == [{"q": "a"}, {"q": "b"}], message
    assert message.usage.cache_read_input_tokens == 100, message.usage

    # Responses on the model whose primary is the OpenAI-compatible upstream.
    first = oai.responses.create(model="agent", input="look up a and b", tools=[LOOKUP])
    assert [i.call_id for i in first.output if i.type == "function_call"] == ["call_a", "call_b"], first
    print(first.id)
else:
    previous = sys.argv[2]
    second = oai.responses.create(
        model="agent", previous_response_id=previous, tools=[LOOKUP],
        input=[
            {"type": "function_call_output", "call_id": "call_a", "output": "A is for apple"},
            {"type": "function_call_output", "call_id": "call_b", "output": "B is for bee"},
        ],
    )
    assert second.output_text == "hello from the test upstream", second
    assert second.previous_response_id == previous, second
    print("continued", second.id)
