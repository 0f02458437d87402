"""The official OpenAI Python SDK against the Sluice edge: completions, streaming
and the SDK's own error classes. Run by tests/tests/edge_to_origin.rs."""
import os
import sys

import openai

base_url = os.environ["SLUICE_BASE_URL"]
key = os.environ["SLUICE_API_KEY"]
client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)

completion = client.chat.completions.create(
    model="sluice-sim-1", messages=[{"role": "user", "content": "hello from the sdk"}]
)
assert completion.choices[0].message.role == "assistant", completion
assert "hello from the sdk" in completion.choices[0].message.content, completion
assert completion.usage.total_tokens > 0, completion

stream = client.chat.completions.create(
    model="sluice-sim-1",
    messages=[{"role": "user", "content": "stream please"}],
    stream=True,
    stream_options={"include_usage": True},
)
text, usage = "", None
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        text += chunk.choices[0].delta.content
    if chunk.usage:
        usage = chunk.usage
assert "stream please" in text, text
assert usage is not None and usage.completion_tokens > 0, usage

# The SDK asks for base64 embeddings by default and decodes them itself.
embeddings = client.embeddings.create(model="sluice-sim-1", input=["first text", "second text"])
assert [e.index for e in embeddings.data] == [0, 1], embeddings
assert len(embeddings.data[0].embedding) == 256, len(embeddings.data[0].embedding)
assert abs(sum(v * v for v in embeddings.data[0].embedding) - 1.0) < 1e-3
assert embeddings.usage.prompt_tokens > 0, embeddings

try:
    openai.OpenAI(base_url=base_url, api_key="sk-wrong", max_retries=0).models.list()
    sys.exit("expected AuthenticationError")
except openai.AuthenticationError:
    pass

try:
    client.chat.completions.create(model="sluice-sim-1", messages=[{"role": "wizard", "content": "x"}])
    sys.exit("expected BadRequestError")
except openai.BadRequestError as e:
    assert e.status_code == 400

# The budget is 5 per minute and 4 were spent above (the 400 counts too).
try:
    for _ in range(3):
        client.chat.completions.create(model="sluice-sim-1", messages=[{"role": "user", "content": "x"}])
    sys.exit("expected RateLimitError")
except openai.RateLimitError as e:
    assert e.status_code == 429
    assert e.response.headers.get("retry-after"), e.response.headers

print("sdk checks passed")
