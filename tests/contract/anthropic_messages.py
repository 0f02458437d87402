"""Anthropic's Messages API (POST /v1/messages) as its reference documents it,
written down as JSON Schema (Anthropic publishes no OpenAPI file): the
request's fields with their types and ranges, the message it answers, and
the events of its stream. Used by contract.py."""
import copy
import json

import jsonschema
import requests

TEXT_BLOCK = {"type": "object", "required": ["type", "text"],
              "properties": {"type": {"const": "text"}, "text": {"type": "string"}}}
IMAGE_BLOCK = {"type": "object", "required": ["type", "source"], "properties": {
    "type": {"const": "image"},
    "source": {"type": "object", "required": ["type", "media_type", "data"], "properties": {
        "type": {"const": "base64"}, "media_type": {"enum": ["image/png", "image/jpeg"]},
        "data": {"const": "iVBORw0KGgo="}}}}}
MESSAGE = {"type": "object", "required": ["role", "content"], "properties": {
    "role": {"enum": ["user", "assistant"]},
    "content": {"anyOf": [{"type": "string", "minLength": 1},
                          {"type": "array", "minItems": 1, "maxItems": 3,
                           "items": {"anyOf": [TEXT_BLOCK, IMAGE_BLOCK]}}]}}}
TOOL = {"type": "object", "required": ["name", "input_schema"], "properties": {
    "name": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"},
    "description": {"type": "string"},
    "input_schema": {"type": "object", "required": ["type"], "properties": {"type": {"const": "object"}}}}}

# The request's fields (https://docs.anthropic.com/en/api/messages).
REQUEST_FIELDS = {
    # (its maximum is the model's, not the API's)
    "max_tokens": {"type": "integer", "minimum": 1},
    "messages": {"type": "array", "minItems": 1, "maxItems": 3, "items": MESSAGE},
    "system": {"anyOf": [{"type": "string"}, {"type": "array", "maxItems": 2, "items": TEXT_BLOCK}]},
    "temperature": {"type": "number", "minimum": 0, "maximum": 1},
    "top_p": {"type": "number", "minimum": 0, "maximum": 1},
    "top_k": {"type": "integer", "minimum": 0},
    "stop_sequences": {"type": "array", "maxItems": 4, "items": {"type": "string"}},
    "metadata": {"type": "object", "properties": {"user_id": {"type": "string", "maxLength": 256}}},
    "tools": {"type": "array", "maxItems": 2, "items": TOOL},
    "tool_choice": {"anyOf": [
        {"type": "object", "required": ["type"], "properties": {"type": {"enum": ["auto", "any", "none"]}}},
    ]},
    "thinking": {"anyOf": [
        {"type": "object", "required": ["type", "budget_tokens"],
         "properties": {"type": {"const": "enabled"}, "budget_tokens": {"type": "integer", "minimum": 1024, "maximum": 8000}}},
        {"type": "object", "required": ["type"], "properties": {"type": {"const": "disabled"}}}]},
    "service_tier": {"enum": ["auto", "standard_only"]},
}

BLOCK = {"type": "object", "required": ["type"], "properties": {"type": {"type": "string"}}}
USAGE = {"type": "object", "required": ["input_tokens", "output_tokens"], "properties": {
    "input_tokens": {"type": "integer", "minimum": 0}, "output_tokens": {"type": "integer", "minimum": 0}}}
ANSWER = {"type": "object",
          "required": ["id", "type", "role", "content", "model", "stop_reason", "usage"],
          "properties": {
              "id": {"type": "string"}, "type": {"const": "message"}, "role": {"const": "assistant"},
              "content": {"type": "array", "items": BLOCK}, "model": {"type": "string"},
              "stop_reason": {"enum": ["end_turn", "max_tokens", "stop_sequence", "tool_use",
                                       "pause_turn", "refusal", "model_context_window_exceeded", None]},
              "stop_sequence": {"type": ["string", "null"]}, "usage": USAGE}}
EVENT = {"type": "object", "required": ["type"], "properties": {"type": {"enum": [
    "message_start", "message_delta", "message_stop", "content_block_start",
    "content_block_delta", "content_block_stop", "ping", "error"]}},
    "allOf": [
        {"if": {"properties": {"type": {"const": "message_start"}}},
         "then": {"required": ["message"], "properties": {"message": {
             "type": "object", "required": ["id", "type", "role", "content", "model", "usage"]}}}},
        {"if": {"properties": {"type": {"enum": ["content_block_start", "content_block_delta", "content_block_stop"]}}},
         "then": {"required": ["index"], "properties": {"index": {"type": "integer", "minimum": 0}}}},
        {"if": {"properties": {"type": {"const": "message_delta"}}},
         "then": {"required": ["delta", "usage"]}},
    ]}


def anthropic_error_shape(body):
    return isinstance(body, dict) and body.get("type") == "error" and \
        isinstance(body.get("error"), dict) and isinstance(body["error"].get("type"), str)


def check(edge, key, model, violations, samples, contract):
    """`contract`: contract.py's helpers (draws, wrong_values, sse)."""
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    answer = jsonschema.Draft202012Validator(ANSWER)
    event = jsonschema.Draft202012Validator(EVENT)

    def post(body):
        return requests.post(f"{edge}/v1/messages", json=body, headers=headers, timeout=60)

    base = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "Hello"}]}
    tool = {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
    for extra in ({}, {"tools": [tool]}, {"stream": True}, {"stream": True, "tools": [tool]}):
        response = post({**base, **extra})
        where = f"messages {sorted(extra)}"
        if response.status_code != 200:
            violations.append(f"answer {where}: {response.status_code} {response.text[:200]}")
            continue
        if extra.get("stream"):
            for name, data in contract.sse(response):
                errors = list(event.iter_errors(data))
                if errors or data.get("type") != name:
                    violations.append(f"answer {where} event {name}: {errors[0].message if errors else 'type differs'}")
        else:
            errors = list(answer.iter_errors(response.json()))
            if errors:
                violations.append(f"answer {where}: {errors[0].message}")
    tried = {"valid": 0, "invalid": 0}
    for name, field_schema in sorted(REQUEST_FIELDS.items()):
        values, failed = contract.draws(field_schema, samples)
        if failed and not values:
            print(f"  /v1/messages {name}: no valid draws ({failed[:80]})")
        for value in values:
            body = copy.deepcopy(base)
            body[name] = value
            response = post(body)
            tried["valid"] += 1
            if response.status_code >= 500:
                violations.append(f"5xx /v1/messages {name}={json.dumps(value)[:200]}: {response.text[:200]}")
            elif response.status_code >= 400 and not anthropic_error_shape(response.json()):
                violations.append(f"shape /v1/messages {name}: {response.text[:200]}")
        for value in contract.wrong_values(field_schema):
            body = copy.deepcopy(base)
            body[name] = value
            for stream in (False, True):
                body["stream"] = stream
                response = post(body)
                tried["invalid"] += 1
                if not 400 <= response.status_code < 500:
                    violations.append(f"{'accepted' if response.status_code < 400 else '5xx'} "
                                      f"/v1/messages {name}={json.dumps(value)} stream={stream}: "
                                      f"{response.status_code} {response.text[:200]}")
                elif not anthropic_error_shape(response.json()):
                    violations.append(f"shape /v1/messages {name}: {response.text[:200]}")
    print(f"/v1/messages: {tried['valid']} valid and {tried['invalid']} invalid requests from the reference")
