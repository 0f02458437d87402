"""AWS's own clients against the test Bedrock (tests/sdk/bedrock_upstream.py),
directly, not through Sluice: boto3's bedrock-runtime client (Converse,
ConverseStream, InvokeModel, InvokeModelWithResponseStream) and the anthropic
SDK's AnthropicBedrock client, both signing with botocore. If they work, the
test upstream speaks Bedrock's wire format (paths, signatures, JSON and
event-stream answers, errors) as AWS's clients expect it.

    bedrock_fidelity.py BASE_URL
"""
import json
import sys

import anthropic
import boto3
import botocore.exceptions

base = sys.argv[1]
creds = {"aws_access_key_id": "AKIDSLUICETEST", "aws_secret_access_key": "sluice-test-secret/with+chars"}
client = boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url=base, **creds)
claude = "us.anthropic.claude-fidelity-v1:0"
tools = {"tools": [{"toolSpec": {"name": "lookup", "inputSchema": {"json": {"type": "object"}}}}]}

answer = client.converse(modelId=claude, messages=[{"role": "user", "content": [{"text": "hi"}]}],
                         inferenceConfig={"maxTokens": 50})
assert answer["output"]["message"]["content"][0]["text"], answer
asked = client.converse(modelId="amazon.nova-fidelity-v1:0", toolConfig=tools,
                        messages=[{"role": "user", "content": [{"text": "look up a and b"}]}])
uses = [b["toolUse"] for b in asked["output"]["message"]["content"] if "toolUse" in b]
assert [u["input"] for u in uses] == [{"q": "a"}, {"q": "b"}], asked
events = client.converse_stream(modelId=claude, messages=[{"role": "user", "content": [{"text": "hi"}]}])
kinds = [next(iter(e)) for e in events["stream"]]
assert kinds[0] == "messageStart" and kinds[-1] == "metadata", kinds

try:
    client.converse(modelId=claude, messages=[{"role": "assistant", "content": [{"text": "hi"}]}])
    raise AssertionError("a conversation starting with the assistant was accepted")
except botocore.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "ValidationException", e.response
try:
    client.converse(modelId="x-throttled", messages=[{"role": "user", "content": [{"text": "hi"}]}])
    raise AssertionError("no throttling")
except client.exceptions.ThrottlingException:
    pass
bad = boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url=base,
                   aws_access_key_id="AKIDSLUICETEST", aws_secret_access_key="wrong")
try:
    bad.converse(modelId=claude, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    raise AssertionError("a wrong secret was accepted")
except botocore.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "InvalidSignatureException", e.response

body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
invoked = json.loads(client.invoke_model(modelId=claude, body=json.dumps(body))["body"].read())
assert invoked["content"][0]["text"], invoked
streamed = client.invoke_model_with_response_stream(modelId=claude, body=json.dumps(body))
types = [json.loads(e["chunk"]["bytes"])["type"] for e in streamed["body"]]
assert types[0] == "message_start" and types[-1] == "message_stop", types

ant = anthropic.AnthropicBedrock(aws_region="us-east-1", base_url=base, aws_access_key=creds["aws_access_key_id"],
                                 aws_secret_key=creds["aws_secret_access_key"], max_retries=0)
message = ant.messages.create(model=claude, max_tokens=50, messages=[{"role": "user", "content": "hi"}])
assert message.content[0].text, message
with ant.messages.stream(model=claude, max_tokens=50, messages=[{"role": "user", "content": "hi"}]) as stream:
    final = stream.get_final_message()
assert final.content[0].text and final.usage.output_tokens == 6, final
print("ok")
