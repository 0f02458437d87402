"""A test AWS Bedrock runtime (and the STS endpoint a web-identity role is
assumed at), written from AWS's API reference, that refuses what Bedrock
refuses. Used by tests/tests/bedrock.rs.

What it checks on every call, as AWS does:
- the SigV4 signature, recomputed with botocore's own signer (an independent
  implementation) from the request as received: credential scope (region,
  service `bedrock`), signed headers, the clock (5 minutes of skew), the
  session token of temporary credentials; or a Bedrock API key as the bearer;
- Converse / ConverseStream bodies against botocore's service model for
  bedrock-runtime (unknown fields, types, unions with one member, lengths),
  and the rules the model alone does not carry: the conversation starts
  with a user turn and alternates, tool use needs `toolConfig`, every tool
  use is answered in the next turn, tool use ids, image formats, base64
  bytes, at most four cache points, Claude's thinking budget and the
  thinking block a tool-use turn must start with;
- InvokeModel bodies for Claude: `anthropic_version` bedrock-2023-05-31,
  no `model` or `stream`, `max_tokens`, `messages`.

Answers are AWS's shapes: JSON, `x-amzn-ErrorType` and `{"message"}` for
errors, and the event-stream binary framing (checked at start against
botocore's own parser) for streams, with the `p` padding field Bedrock adds.

Scripted model: with tools and no results yet, it calls `lookup` for a and
b; with results, it answers with what they said; a forced
`structured_output` tool gets its JSON; Claude with thinking thinks first.
A model id containing `breaks` fails its stream after the first text with
a modelStreamErrorException; `throttled` answers 429.

With `--anthropic-backend URL`, a Claude model's InvokeModel calls are
answered by an Anthropic Messages API at URL (the test Anthropic upstream,
which scripts agent sessions), as Bedrock answers them with Anthropic's
models: the body, checked as above, goes on with the model id, and the
answer or its events come back in Bedrock's framing.

    bedrock_upstream.py [--anthropic-backend URL]  -> prints "listening PORT", serves until killed
    GET /_seen            -> what each call carried (JSON)
"""
import base64
import binascii
import datetime
import hashlib
import json
import re
import struct
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import ParamValidationError
from botocore.session import get_session
from botocore.validate import validate_parameters

REGION = "us-east-1"
STATIC_KEYS = {"AKIDSLUICETEST": "sluice-test-secret/with+chars"}
API_KEYS = {"bedrock-api-key-1"}
ROLE_ARN = "arn:aws:iam::123456789012:role/sluice-bedrock"
WEB_IDENTITY_TOKEN = "eyJ.test-web-identity.token"
ANTHROPIC_VERSION = "bedrock-2023-05-31"
BACKEND = sys.argv[sys.argv.index("--anthropic-backend") + 1] if "--anthropic-backend" in sys.argv else None

MODEL = get_session().get_service_model("bedrock-runtime")
SHAPES = {op: MODEL.operation_model(op).input_shape for op in ("Converse", "ConverseStream")}

lock = threading.Lock()
seen = []
issued = {}  # temporary access key id -> (secret, session token)
sts_calls = []


class Refused(Exception):
    def __init__(self, status, kind, message):
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def validation(message):
    return Refused(400, "ValidationException", message)


# --- event-stream framing ---------------------------------------------------

def frame(headers, payload):
    """One AWS event-stream message: prelude (total and headers length, CRC),
    string headers (type 7), payload, message CRC."""
    raw = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        raw += bytes([len(n)]) + n + bytes([7]) + struct.pack(">H", len(v)) + v
    prelude = struct.pack(">II", 12 + len(raw) + len(payload) + 4, len(raw))
    message = prelude + struct.pack(">I", binascii.crc32(prelude)) + raw + payload
    return message + struct.pack(">I", binascii.crc32(message))


def event(kind, data):
    data = dict(data, p="abcdefghijklmnopqrstuvwxyzABCDEF"[: 1 + len(kind)])
    return frame({":event-type": kind, ":content-type": "application/json", ":message-type": "event"},
                 json.dumps(data).encode())


def exception(kind, message):
    return frame({":exception-type": kind, ":content-type": "application/json", ":message-type": "exception"},
                 json.dumps({"message": message}).encode())


def _check_framing():
    buffer = EventStreamBuffer()
    buffer.add_data(event("messageStart", {"role": "assistant"}) + exception("throttlingException", "slow"))
    parsed = list(buffer)
    assert parsed[0].headers[":event-type"] == "messageStart", parsed
    assert json.loads(parsed[0].payload)["role"] == "assistant"
    assert parsed[1].headers[":exception-type"] == "throttlingException"


# --- authentication ----------------------------------------------------------

AUTH = re.compile(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
                  r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$")


def authenticate(handler, body):
    """Who signed the request, or a refusal in AWS's words."""
    authorization = handler.headers.get("authorization", "")
    if authorization.startswith("Bearer "):
        if authorization[7:] not in API_KEYS:
            raise Refused(403, "AccessDeniedException", "Invalid API Key format: Must start with pre-defined prefix")
        return {"kind": "api-key"}
    match = AUTH.match(authorization)
    if not match:
        raise Refused(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    access_key, day, region, service, signed, signature = match.groups()
    if region != REGION or service != "bedrock":
        raise Refused(403, "InvalidSignatureException",
                      f"Credential should be scoped to a valid region / service: {region}/{service}")
    token = handler.headers.get("x-amz-security-token")
    if access_key in STATIC_KEYS:
        secret, expected_token = STATIC_KEYS[access_key], None
    elif access_key in issued:
        secret, expected_token = issued[access_key]
    else:
        raise Refused(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
    if token != expected_token:
        raise Refused(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
    amz_date = handler.headers.get("x-amz-date", "")
    try:
        when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        raise Refused(403, "IncompleteSignatureException", "Date must be in ISO-8601 'basic format'")
    if abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()) > 300 or not amz_date.startswith(day):
        raise Refused(403, "InvalidSignatureException", "Signature expired")
    names = signed.split(";")
    if "host" not in names or "x-amz-date" not in names:
        raise Refused(403, "InvalidSignatureException", "host and x-amz-date must be signed")
    headers = {name: handler.headers.get(name, "") for name in names}
    request = AWSRequest(method=handler.command, url=f"http://{handler.headers['host']}{handler.path}",
                         data=body, headers=headers)
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(access_key, secret, token), "bedrock", REGION)
    if signer.signed_headers(signer.headers_to_sign(request)) != signed:
        raise Refused(403, "InvalidSignatureException", "SignedHeaders do not match the request's")
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if expected != signature:
        raise Refused(403, "InvalidSignatureException",
                      "The request signature we calculated does not match the signature you provided. "
                      f"The Canonical String for this request should have been\n'{canonical}'")
    return {"kind": "sigv4", "access_key": access_key, "session": token is not None}


def assume_role(handler, body):
    form = dict(urllib.parse.parse_qsl(body.decode()))
    if form.get("Action") != "AssumeRoleWithWebIdentity" or form.get("Version") != "2011-06-15":
        return handler.xml(400, "<ErrorResponse><Error><Code>InvalidAction</Code></Error></ErrorResponse>")
    if form.get("RoleArn") != ROLE_ARN or not form.get("RoleSessionName"):
        return handler.xml(400, "<ErrorResponse><Error><Code>ValidationError</Code></Error></ErrorResponse>")
    if form.get("WebIdentityToken") != WEB_IDENTITY_TOKEN:
        return handler.xml(400, "<ErrorResponse><Error><Code>InvalidIdentityToken</Code>"
                                "<Message>Couldn't retrieve verification key from your identity provider</Message>"
                                "</Error></ErrorResponse>")
    with lock:
        n = len(sts_calls) + 1
        access_key = f"ASIATEMP{n:08d}"
        issued[access_key] = (f"temp-secret-{n}", f"session-token-{n}")
        sts_calls.append(form["RoleSessionName"])
    expires = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    secret, token = issued[access_key]
    handler.xml(200, f"""<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:sluice:origin</SubjectFromWebIdentityToken>
    <AssumedRoleUser><Arn>{ROLE_ARN}/x</Arn><AssumedRoleId>AROA:x</AssumedRoleId></AssumedRoleUser>
    <Credentials>
      <SessionToken>{token}</SessionToken>
      <SecretAccessKey>{secret}</SecretAccessKey>
      <Expiration>{expires}</Expiration>
      <AccessKeyId>{access_key}</AccessKeyId>
    </Credentials>
    <Audience>sts.amazonaws.com</Audience>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>""")


# --- Converse's rules --------------------------------------------------------

TOOL_USE_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
DOCUMENT_NAME = re.compile(r"^[\w\s\-\(\)\[\]]+$")


def check_converse(operation, model_id, body):
    try:
        validate_parameters(dict(body, modelId=model_id), SHAPES[operation])
    except ParamValidationError as e:
        raise validation(str(e).replace("\n", " "))
    messages = body["messages"]
    if not messages or messages[0]["role"] != "user":
        raise validation("A conversation must start with a user message. Try again with a conversation "
                         "that starts with a user message.")
    for before, after in zip(messages, messages[1:]):
        if before["role"] == after["role"]:
            raise validation("A conversation must alternate between user and assistant roles. Make sure the "
                             "conversation alternates between user and assistant roles and try again.")
    blocks = [(i, b) for i, m in enumerate(messages) for b in m["content"]]
    blocks += [(-1, b) for b in body.get("system", [])]
    uses_tools = any("toolUse" in b or "toolResult" in b for _, b in blocks)
    if uses_tools and "toolConfig" not in body:
        raise validation("The toolConfig field must be defined when using toolUse and toolResult content blocks.")
    declared = {t["toolSpec"]["name"] for t in body.get("toolConfig", {}).get("tools", []) if "toolSpec" in t}
    caches = 0
    for i, block in blocks:
        if "cachePoint" in block:
            caches += 1
        if "toolUse" in block:
            if not TOOL_USE_ID.match(block["toolUse"]["toolUseId"]):
                raise validation(f"messages.{i}.content.toolUse.toolUseId failed to satisfy constraint: "
                                 "Member must satisfy regular expression pattern: [a-zA-Z0-9_-]+")
            if block["toolUse"]["name"] not in declared:
                raise validation(f"The tool {block['toolUse']['name']} is used but not declared in toolConfig.")
        for kind in ("image", "document"):
            media = block.get(kind) or {}
            formats = {"image": {"png", "jpeg", "gif", "webp"},
                       "document": {"pdf", "csv", "doc", "docx", "xls", "xlsx", "html", "txt", "md"}}[kind]
            if media and media.get("format") not in formats:
                raise validation(f"messages.{i}.content.{kind}.format must be one of {sorted(formats)}")
            if kind == "document" and media and not DOCUMENT_NAME.match(media.get("name", "")):
                raise validation("The document file name can only contain alphanumeric characters, whitespace "
                                 "characters, hyphens, parentheses, and square brackets.")
            if "bytes" in media.get("source", {}):
                try:
                    base64.b64decode(media["source"]["bytes"], validate=True)
                except binascii.Error:
                    raise validation(f"messages.{i}.content.{kind}.source.bytes is not valid base64")
    if caches > 4:
        raise validation("A maximum of 4 blocks with cache_control may be provided. Found 5.")
    for i, (asked, answered) in enumerate(zip(messages, messages[1:])):
        uses = [b["toolUse"]["toolUseId"] for b in asked["content"] if "toolUse" in b]
        results = [b["toolResult"]["toolUseId"] for b in answered["content"] if "toolResult" in b]
        if sorted(uses) != sorted(results) and (uses or results):
            raise validation(f"Expected toolResult blocks at messages.{i + 1}.content for the following Ids: "
                             f"{', '.join(uses)}")
    inference = body.get("inferenceConfig", {})
    if not 0 <= inference.get("temperature", 0) <= 1:
        raise validation("inferenceConfig.temperature must be between 0 and 1")
    if "claude" in model_id:
        check_betas(model_id, body.get("additionalModelRequestFields", {}).get("anthropic_beta", []), [])
    thinking = body.get("additionalModelRequestFields", {}).get("thinking")
    if thinking and thinking.get("type") == "enabled":
        if "claude" not in model_id:
            raise validation("The model returned the following errors: thinking: Extra inputs are not permitted")
        budget = thinking.get("budget_tokens", 0)
        if budget < 1024 or budget >= inference.get("maxTokens", 4096):
            raise validation("The model returned the following errors: `max_tokens` must be greater than "
                             "`thinking.budget_tokens`, and the budget at least 1024")
        for i, message in enumerate(messages):
            content = message["content"]
            if message["role"] == "assistant" and any("toolUse" in b for b in content) \
                    and "reasoningContent" not in content[0]:
                raise validation(f"The model returned the following errors: messages.{i}.content.0.type: "
                                 "Expected `thinking` or `redacted_thinking`, but found `tool_use`. When "
                                 "`thinking` is enabled, a final `assistant` message must start with a thinking block")


# The beta flags Bedrock takes for Claude (AWS's documentation, and Claude
# Code's own, which Bedrock accepts); Claude Opus 4.7 takes only interleaved
# thinking. Anything else is refused whole, as Bedrock does.
BETAS = {"claude-code-20250219", "computer-use-2024-10-22", "computer-use-2025-01-24",
         "token-efficient-tools-2025-02-19", "interleaved-thinking-2025-05-14", "output-128k-2025-02-19",
         "dev-full-thinking-2025-05-14", "context-1m-2025-08-07", "context-management-2025-06-27",
         "effort-2025-11-24", "tool-search-tool-2025-10-19", "tool-examples-2025-10-29"}


def check_betas(model_id, betas, tools):
    accepted = {"interleaved-thinking-2025-05-14"} if "opus-4-7" in model_id else BETAS
    if not isinstance(betas, list) or any(b not in accepted for b in betas):
        raise validation("The model returned the following errors: invalid beta flag")
    for i, tool in enumerate(tools or []):
        if "defer_loading" in tool and "tool-search-tool-2025-10-19" not in betas:
            raise validation(f"The model returned the following errors: tools.{i}.custom.defer_loading: "
                             "Extra inputs are not permitted")


def check_invoke(body, model_id=""):
    for field in ("model", "stream"):
        if field in body:
            raise validation(f"Malformed input request: #: extraneous key [{field}] is not permitted, please "
                             "reformat your input and try again.")
    # AWS documents bedrock-2023-05-31; the anthropic SDK's Bedrock client
    # of late sends its API version (a date), which Bedrock takes too.
    version = body.get("anthropic_version")
    if not isinstance(version, str) or not (version == ANTHROPIC_VERSION or re.fullmatch(r"\d{4}-\d{2}-\d{2}", version)):
        raise validation("Malformed input request: #: required key [anthropic_version] not found")
    for field in ("max_tokens", "messages"):
        if field not in body:
            raise validation(f"Malformed input request: #: required key [{field}] not found, please reformat "
                             "your input and try again.")
    if not isinstance(body.get("anthropic_beta", []), list):
        raise validation("Malformed input request: #/anthropic_beta: expected type: JSONArray")
    check_betas(model_id, body.get("anthropic_beta", []), body.get("tools"))


# --- the scripted model ------------------------------------------------------

USAGE = {"inputTokens": 12, "outputTokens": 6, "totalTokens": 18, "cacheReadInputTokens": 0,
         "cacheWriteInputTokens": 0}


def converse_answer(model_id, body):
    """The content blocks and stop reason the model answers with."""
    last = body["messages"][-1]["content"]
    results = [b["toolResult"] for b in last if "toolResult" in b]
    tools = [t["toolSpec"]["name"] for t in body.get("toolConfig", {}).get("tools", []) if "toolSpec" in t]
    choice = body.get("toolConfig", {}).get("toolChoice", {})
    content = []
    if body.get("additionalModelRequestFields", {}).get("thinking", {}).get("type") == "enabled":
        content.append({"reasoningContent": {"reasoningText": {"text": "Let me think.", "signature": "sig-bedrock"}}})
    if choice.get("tool", {}).get("name") == "structured_output":
        content.append({"toolUse": {"toolUseId": "tooluse_structured", "name": "structured_output",
                                    "input": {"city": "Tokyo", "population": 37000000}}})
        return content, "tool_use"
    if results:
        said = " ".join(c.get("text", json.dumps(c.get("json"))) for r in results for c in r["content"])
        content.append({"text": f"The lookups said: {said}"})
        return content, "end_turn"
    if "lookup" in tools:
        for q in ("a", "b"):
            content.append({"toolUse": {"toolUseId": f"tooluse_{q}{len(body['messages'])}", "name": "lookup",
                                        "input": {"q": q}}})
        return content, "tool_use"
    content.append({"text": f"Hello from {model_id}."})
    return content, "end_turn"


def anthropic_message(content, stop):
    blocks = []
    for block in content:
        if "text" in block:
            blocks.append({"type": "text", "text": block["text"]})
        elif "toolUse" in block:
            use = block["toolUse"]
            blocks.append({"type": "tool_use", "id": use["toolUseId"].replace("tooluse", "toolu"),
                           "name": use["name"], "input": use["input"]})
        elif "reasoningContent" in block:
            text = block["reasoningContent"]["reasoningText"]
            blocks.append({"type": "thinking", "thinking": text["text"], "signature": text["signature"]})
    return {"id": "msg_bdrk_01Test", "type": "message", "role": "assistant", "model": "claude-haiku-4-5-20251001",
            "content": blocks, "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": USAGE["inputTokens"], "output_tokens": USAGE["outputTokens"],
                      "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}}


def invoke_as_converse(body):
    """An InvokeModel Claude body as the Converse body the script reads."""
    messages = []
    for message in body["messages"]:
        content = message["content"] if isinstance(message["content"], list) else [
            {"type": "text", "text": message["content"]}]
        blocks = []
        for block in content:
            if block["type"] == "tool_result":
                text = block.get("content", "")
                text = text if isinstance(text, str) else " ".join(c.get("text", "") for c in text)
                blocks.append({"toolResult": {"toolUseId": block["tool_use_id"], "content": [{"text": text}]}})
            else:
                blocks.append({"text": block.get("text", "")})
        messages.append({"role": message["role"], "content": blocks})
    converse = {"messages": messages}
    if body.get("tools"):
        converse["toolConfig"] = {"tools": [{"toolSpec": {"name": t["name"]}} for t in body["tools"]]}
    if body.get("tool_choice", {}).get("type") == "tool":
        converse["toolConfig"]["toolChoice"] = {"tool": {"name": body["tool_choice"]["name"]}}
    if body.get("thinking"):
        converse["additionalModelRequestFields"] = {"thinking": body["thinking"]}
    return converse


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, body, content_type="application/json", headers=None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.send_header("x-amzn-requestid", "9c7e0a2b-test")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def xml(self, status, text):
        self.send(status, text.encode(), "text/xml")

    def refuse(self, refused):
        self.send(refused.status, {"message": refused.message},
                  headers={"x-amzn-ErrorType": f"{refused.kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"})

    def chunks(self, frames):
        self.send_response(200)
        self.send_header("content-type", "application/vnd.amazon.eventstream")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("x-amzn-bedrock-content-type", "application/json")
        self.end_headers()
        for data in frames:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def from_backend(self, model_id, request, stream):
        """Claude's answer from the Anthropic backend, framed as Bedrock frames it."""
        body = {k: v for k, v in request.items() if k not in ("anthropic_version", "anthropic_beta")}
        body["model"] = model_id
        headers = {"content-type": "application/json", "anthropic-version": "2023-06-01", "x-api-key": "bedrock"}
        if request.get("anthropic_beta"):
            headers["anthropic-beta"] = ",".join(request["anthropic_beta"])
        if stream:
            body["stream"] = True
        call = urllib.request.Request(f"{BACKEND}/v1/messages", data=json.dumps(body).encode(), headers=headers)
        try:
            answer = urllib.request.urlopen(call, timeout=120)
        except urllib.error.HTTPError as e:
            raise validation(f"The model returned the following errors: {e.read().decode()}")
        if not stream:
            return self.send(200, answer.read())

        def events():
            for line in answer:
                if line.startswith(b"data:"):
                    yield event("chunk", {"bytes": base64.b64encode(line[5:].strip()).decode()})
        return self.chunks(events())

    def do_GET(self):
        if self.path == "/_seen":
            with lock:
                return self.send(200, {"calls": seen, "sts": sts_calls})
        self.send(404, {"message": "not found"})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path.startswith("/sts"):
            return assume_role(self, body)
        match = re.fullmatch(r"/model/([^/]+)/(converse|converse-stream|invoke|invoke-with-response-stream|count-tokens)",
                             self.path)
        if not match:
            return self.send(404, {"message": "Not Found"}, headers={"x-amzn-ErrorType": "UnknownOperationException"})
        model_id, action = urllib.parse.unquote(match.group(1)), match.group(2)
        try:
            who = authenticate(self, body)
            try:
                request = json.loads(body)
            except ValueError:
                raise Refused(400, "SerializationException", "Unexpected character")
            with lock:
                seen.append({"model": model_id, "action": action, "auth": who, "body": request,
                             "beta": self.headers.get("anthropic-beta")})
            if "throttled" in model_id:
                raise Refused(429, "ThrottlingException", "Too many requests, please wait before trying again.")
            if action in ("converse", "converse-stream"):
                operation = "Converse" if action == "converse" else "ConverseStream"
                check_converse(operation, model_id, request)
                content, stop = converse_answer(model_id, request)
                if action == "converse":
                    return self.send(200, {"output": {"message": {"role": "assistant", "content": content}},
                                           "stopReason": stop, "usage": USAGE, "metrics": {"latencyMs": 42}})
                return self.chunks(converse_stream(model_id, content, stop))
            if action == "count-tokens":
                invoke = request.get("input", {}).get("invokeModel")
                if invoke:
                    check_invoke(dict(json.loads(base64.b64decode(invoke["body"])), max_tokens=1), model_id)
                return self.send(200, {"inputTokens": len(body) // 4})
            if "embed" in model_id:
                text = request.get("inputText")
                if not isinstance(text, str) or set(request) - {"inputText", "dimensions", "normalize", "embeddingTypes"}:
                    raise validation("Malformed input request: #: required key [inputText] not found")
                digest = hashlib.sha256(text.encode()).digest()
                return self.send(200, {"embedding": [b / 255 for b in digest[:3]],
                                       "inputTextTokenCount": len(text.split())})
            check_invoke(request, model_id)
            if BACKEND and "claude" in model_id:
                return self.from_backend(model_id, request, action == "invoke-with-response-stream")
            content, stop = converse_answer(model_id, invoke_as_converse(request))
            message = anthropic_message(content, stop)
            if action == "invoke":
                return self.send(200, message)
            return self.chunks(invoke_stream(message, model_id))
        except Refused as refused:
            return self.refuse(refused)


def converse_stream(model_id, content, stop):
    yield event("messageStart", {"role": "assistant"})
    for index, block in enumerate(content):
        if "text" in block:
            text = block["text"]
            for piece in (text[: len(text) // 2], text[len(text) // 2:]):
                yield event("contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": piece}})
                if "breaks" in model_id:
                    yield exception("modelStreamErrorException",
                                    "The model stopped mid-answer: overloaded (test upstream)")
                    return
        elif "toolUse" in block:
            use = block["toolUse"]
            yield event("contentBlockStart", {"contentBlockIndex": index, "start": {
                "toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}})
            arguments = json.dumps(use["input"])
            for piece in (arguments[:3], arguments[3:]):
                yield event("contentBlockDelta", {"contentBlockIndex": index,
                                                  "delta": {"toolUse": {"input": piece}}})
        elif "reasoningContent" in block:
            text = block["reasoningContent"]["reasoningText"]
            yield event("contentBlockDelta", {"contentBlockIndex": index,
                                              "delta": {"reasoningContent": {"text": text["text"]}}})
            yield event("contentBlockDelta", {"contentBlockIndex": index,
                                              "delta": {"reasoningContent": {"signature": text["signature"]}}})
        yield event("contentBlockStop", {"contentBlockIndex": index})
    yield event("messageStop", {"stopReason": stop})
    yield event("metadata", {"usage": USAGE, "metrics": {"latencyMs": 42}})


def invoke_stream(message, model_id):
    def chunk(data):
        return event("chunk", {"bytes": base64.b64encode(json.dumps(data).encode()).decode()})

    start = dict(message, content=[], stop_reason=None)
    start["usage"] = dict(message["usage"], output_tokens=1)
    yield chunk({"type": "message_start", "message": start})
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            yield chunk({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})
            yield chunk({"type": "content_block_delta", "index": index,
                         "delta": {"type": "text_delta", "text": block["text"]}})
            if "breaks" in model_id:
                yield exception("modelStreamErrorException", "The model stopped mid-answer: overloaded (test upstream)")
                return
        elif block["type"] == "tool_use":
            yield chunk({"type": "content_block_start", "index": index,
                         "content_block": dict(block, input={})})
            yield chunk({"type": "content_block_delta", "index": index,
                         "delta": {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}})
        elif block["type"] == "thinking":
            yield chunk({"type": "content_block_start", "index": index,
                         "content_block": {"type": "thinking", "thinking": "", "signature": ""}})
            yield chunk({"type": "content_block_delta", "index": index,
                         "delta": {"type": "thinking_delta", "thinking": block["thinking"]}})
            yield chunk({"type": "content_block_delta", "index": index,
                         "delta": {"type": "signature_delta", "signature": block["signature"]}})
        yield chunk({"type": "content_block_stop", "index": index})
    yield chunk({"type": "message_delta", "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                 "usage": {"output_tokens": message["usage"]["output_tokens"]}})
    yield chunk({"type": "message_stop", "amazon-bedrock-invocationMetrics": {
        "inputTokenCount": 12, "outputTokenCount": 6, "invocationLatency": 42, "firstByteLatency": 10}})


if __name__ == "__main__":
    _check_framing()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()
