"""Sluice held to the published contracts, through the edge.

OpenAI's surfaces against OpenAI's OpenAPI description (read from
../shared/specs/openai-openapi.yaml, or $SLUICE_OPENAPI_SPEC; never copied into
the project); /v1/messages against Anthropic's Messages API reference, written
down in anthropic_messages.py (Anthropic publishes no OpenAPI file).

1. Answers validate against the response schemas: chat completions (whole and
   every stream chunk), Responses (whole and every stream event), embeddings,
   models; Messages (whole and every event).
2. Requests generated from the request schemas, one documented field at a
   time (hypothesis-jsonschema draws valid values from the field's schema;
   invalid ones take a JSON type the schema does not allow, a number outside
   its range, a string outside its enum): a valid one is never a 5xx, an
   invalid one is always a 4xx, in the API's own error shape.

Run by tests/tests/contract.rs against the simulated model; prints a summary
and exits non-zero listing every violation.
"""
import copy
import json
import os
import random
import sys
import warnings

import hypothesis
import jsonschema
import requests
import yaml
from hypothesis_jsonschema import from_schema

import anthropic_messages

EDGE = os.environ["SLUICE_EDGE"]
KEY = os.environ["SLUICE_API_KEY"]
MODEL = os.environ.get("SLUICE_MODEL", "sluice-sim-1")
SAMPLES = int(os.environ.get("SLUICE_CONTRACT_SAMPLES", "3"))
random.seed(7)
warnings.filterwarnings("ignore", category=hypothesis.errors.NonInteractiveExampleWarning)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def spec_path():
    candidates = [os.environ.get("SLUICE_OPENAPI_SPEC"),
                  os.path.join(REPO, "..", "shared", "specs", "openai-openapi.yaml"),
                  "/work/shared/specs/openai-openapi.yaml"]
    for path in filter(None, candidates):
        if os.path.exists(path):
            return path
    sys.exit(f"OpenAI's OpenAPI description not found (tried {candidates}); set SLUICE_OPENAPI_SPEC")


SPEC = yaml.safe_load(open(spec_path()))
SCHEMAS = SPEC["components"]["schemas"]

# Keywords hypothesis-jsonschema and jsonschema understand; the rest
# (descriptions, OpenAPI's x-* and discriminator) are documentation.
KEEP = {"type", "enum", "const", "properties", "required", "items", "prefixItems",
        "additionalProperties", "anyOf", "oneOf", "allOf", "minimum", "maximum",
        "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems", "minLength",
        "maxLength", "pattern", "minProperties", "maxProperties", "$ref", "not",
        "uniqueItems", "multipleOf", "nullable"}


def normalize(node):
    """OpenAPI 3.0's `nullable` as JSON Schema, documentation keys dropped."""
    if isinstance(node, list):
        return [normalize(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("properties",):
            out[key] = {k: normalize(v) for k, v in value.items()}
        elif key in KEEP:
            out[key] = normalize(value)
    if out.pop("nullable", False):
        if "type" in out and isinstance(out["type"], str):
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = list(out["enum"]) + [None]
        elif "$ref" in out:
            out = {"anyOf": [{"$ref": out["$ref"]}, {"type": "null"}]}
    return out


def inline(node, depth=0, limit=7):
    """$refs replaced by the schemas they name (deeper than `limit`: anything)."""
    if isinstance(node, list):
        return [inline(n, depth, limit) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        if depth >= limit:
            return {}
        name = node["$ref"].split("/")[-1]
        return inline(normalize(SCHEMAS[name]), depth + 1, limit)
    return {k: (inline(v, depth, limit) if k != "enum" else v) for k, v in node.items()}


def schema(name, limit=7):
    return inline(normalize(SCHEMAS[name]), 0, limit)


def validator(name):
    return jsonschema.Draft202012Validator(schema(name, limit=12))


class EventValidator:
    """A union of event schemas (`ResponseStreamEvent`), each event checked
    against the member its `type` names, so a failure says what is wrong."""

    def __init__(self, union):
        self.by_type = {}
        node = SCHEMAS[union]
        for member in node.get("anyOf", node.get("oneOf", [])):
            name = member["$ref"].split("/")[-1]
            kinds = SCHEMAS[name].get("properties", {}).get("type", {}).get("enum", [])
            for kind in kinds:
                self.by_type[kind] = validator(name)

    def iter_errors(self, event):
        chosen = self.by_type.get(event.get("type")) if isinstance(event, dict) else None
        if chosen is None:
            yield jsonschema.ValidationError(f"no event schema of type {event.get('type') if isinstance(event, dict) else event!r}")
            return
        yield from chosen.iter_errors(event)


def properties(name):
    """A request schema's top-level properties (through allOf)."""
    out = {}

    def walk(node):
        for part in node.get("allOf", []):
            walk(part)
        out.update(node.get("properties", {}))
    walk(schema(name))
    return out


VIOLATIONS = []


def violation(kind, where, detail):
    VIOLATIONS.append(f"{kind} {where}: {detail}")


def post(path, body, headers=None):
    return requests.post(f"{EDGE}{path}", json=body, timeout=60,
                         headers={"Authorization": f"Bearer {KEY}", **(headers or {})})


def sse(response):
    """The data of each server-sent event: (event name, JSON or the raw text)."""
    event = None
    for line in response.text.splitlines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()
            try:
                yield event, json.loads(data)
            except ValueError:
                yield event, data
            event = None


def check_answer(where, response, whole, stream_item=None):
    """A 2xx answer validates against its schema (each event when streamed)."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for event, data in sse(response):
            if data == "[DONE]":
                continue
            errors = list(stream_item.iter_errors(data)) if stream_item else []
            if errors:
                error = jsonschema.exceptions.best_match(errors)
                violation("answer", f"{where} event {event or ''}",
                          f"{error.message[:200]} at {list(error.absolute_path)} in {json.dumps(data)[:200]}")
        return
    body = response.json()
    errors = list(whole.iter_errors(body))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        violation("answer", where, f"{error.message[:200]} at {list(error.absolute_path)} in {json.dumps(body)[:200]}")


def openai_error_shape(body):
    return isinstance(body, dict) and isinstance(body.get("error"), dict) and \
        isinstance(body["error"].get("message"), str) and isinstance(body["error"].get("type"), str)


def wrong_values(field_schema):
    """Values a field's schema refuses: other JSON types, out-of-range
    numbers, strings outside an enum."""
    allowed = set()
    bounds = []
    enum_only = None

    def collect(node):
        nonlocal enum_only
        if not isinstance(node, dict) or not node:
            allowed.update({"any"})
            return
        for key in ("anyOf", "oneOf"):
            for option in node.get(key, []):
                collect(option)
        for option in node.get("allOf", []):
            collect(option)
        kind = node.get("type")
        kinds = kind if isinstance(kind, list) else [kind] if kind else []
        if not kinds and "enum" in node:
            kinds = sorted({type(v).__name__ for v in node["enum"]})
            kinds = ["string" if k == "str" else k for k in kinds]
        if not kinds and not any(k in node for k in ("anyOf", "oneOf", "allOf")):
            if "properties" in node:
                kinds = ["object"]
            elif "items" in node:
                kinds = ["array"]
            else:
                allowed.add("any")
        allowed.update(kinds)
        if kinds and set(kinds) <= {"integer", "number", "null"} and ("minimum" in node or "maximum" in node):
            bounds.append((node.get("minimum"), node.get("maximum"), "integer" in kinds))
        if kinds == ["string"] and "enum" in node:
            enum_only = node["enum"] if enum_only is None else enum_only + node["enum"]
    collect(field_schema)
    if "any" in allowed:
        return []
    if "number" in allowed:
        allowed.add("integer")
    samples = {"string": "not a valid value", "integer": 7, "number": 0.5, "boolean": True,
               "object": {"unexpected": True}, "array": [{"unexpected": True}], "null": None}
    wrong = [value for kind, value in samples.items()
             if kind not in allowed and kind != "null" and not (kind == "integer" and "number" in allowed)]
    for low, high, integer in bounds:
        if low is not None and abs(low) < 1e15:
            wrong.append(int(low) - 1 if integer else low - 1)
        if high is not None and abs(high) < 1e15:
            wrong.append(int(high) + 1 if integer else high + 1)
    if enum_only is not None and allowed <= {"string", "null"}:
        wrong.append("no-such-choice")
    return wrong


def draws(field_schema, count):
    try:
        strategy = from_schema(field_schema)
    except Exception as error:  # a schema hypothesis-jsonschema cannot draw from
        return [], str(error)
    values = []
    for _ in range(count * 3):
        try:
            values.append(strategy.example())
        except Exception as error:
            return values, str(error)
        if len(values) >= count:
            break
    return values, None


# Fields whose generated values would run the call elsewhere than the model
# under test, or for minutes: set by the base request or by what it tests.
SKIP = {"model", "stream", "background"}


def surface(path, request_schema, base, answer, stream_item, limit_fields=None):
    fields = properties(request_schema)
    tried = {"valid": 0, "invalid": 0}
    for name, field_schema in sorted(fields.items()):
        if name in SKIP or (limit_fields and name not in limit_fields):
            continue
        values, failed = draws(field_schema, SAMPLES)
        if failed and not values:
            print(f"  {path} {name}: no valid draws ({failed[:80]})")
        for value in values:
            body = copy.deepcopy(base)
            body[name] = value
            response = post(path, body)
            tried["valid"] += 1
            if response.status_code >= 500:
                violation("5xx", f"{path} {name}={json.dumps(value)[:200]}", f"{response.status_code} {response.text[:300]}")
            elif response.status_code < 300 and not body.get("stream") and \
                    body.get("encoding_format") != "base64":
                # (base64 embeddings are a string the schema does not describe)
                check_answer(f"{path} {name}", response, answer, stream_item)
            elif response.status_code >= 400 and not openai_error_shape(response.json()):
                violation("shape", f"{path} {name}", response.text[:300])
        for value in wrong_values(field_schema):
            body = copy.deepcopy(base)
            body[name] = value
            response = post(path, body)
            tried["invalid"] += 1
            if response.status_code < 400 or response.status_code >= 500:
                violation("accepted" if response.status_code < 400 else "5xx",
                          f"{path} {name}={json.dumps(value)}", f"{response.status_code} {response.text[:200]}")
            elif not openai_error_shape(response.json()):
                violation("shape", f"{path} {name}={json.dumps(value)}", response.text[:300])
    print(f"{path}: {tried['valid']} valid and {tried['invalid']} invalid requests from the schema")


def main():
    chat_answer = validator("CreateChatCompletionResponse")
    chat_chunk = validator("CreateChatCompletionStreamResponse")
    responses_answer = validator("Response")
    responses_event = EventValidator("ResponseStreamEvent")

    # 1. The answers of every OpenAI surface, whole and streamed.
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}]}
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    for extra in ({}, {"n": 2, "max_tokens": 5}, {"tools": [tool]},
                  {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
                      "type": "object", "properties": {"a": {"type": "string"}}}}}},
                  {"stream": True, "stream_options": {"include_usage": True}},
                  {"stream": True, "tools": [tool]}):
        check_answer(f"chat {sorted(extra)}", post("/v1/chat/completions", {**chat, **extra}),
                     chat_answer, chat_chunk)
    responses = {"model": MODEL, "input": "Hello"}
    for extra in ({}, {"tools": [{"type": "function", "name": "get_weather", "parameters": tool["function"]["parameters"]}]},
                  {"stream": True}, {"store": False, "instructions": "Be brief."}):
        check_answer(f"responses {sorted(extra)}", post("/v1/responses", {**responses, **extra}),
                     responses_answer, responses_event)
    check_answer("embeddings", post("/v1/embeddings", {"model": MODEL, "input": ["a", "b"]}),
                 validator("CreateEmbeddingResponse"))
    models = requests.get(f"{EDGE}/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    check_answer("models", models, validator("ListModelsResponse"))

    # 2. Requests generated from the request schemas, a field at a time.
    surface("/v1/chat/completions", "CreateChatCompletionRequest", chat, chat_answer, chat_chunk)
    surface("/v1/responses", "CreateResponse", responses, responses_answer, responses_event)
    surface("/v1/embeddings", "CreateEmbeddingRequest", {"model": MODEL, "input": "hello"},
            validator("CreateEmbeddingResponse"), None)

    # 3. Anthropic's Messages API, from its reference.
    anthropic_messages.check(EDGE, KEY, MODEL, VIOLATIONS, SAMPLES, sys.modules[__name__])

    if VIOLATIONS:
        print(f"{len(VIOLATIONS)} contract violations:")
        for v in VIOLATIONS:
            print("  " + v)
        sys.exit(1)
    print("no contract violations")


if __name__ == "__main__":
    main()
