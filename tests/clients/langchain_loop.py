"""LangChain's ChatOpenAI through the Sluice edge, as an app drives it: tools
bound, the loop written out (invoke, run each tool call, append the
ToolMessage, invoke again), over several turns; chat completions or the
Responses API (`use_responses_api`). Driven by tests/tests/agent_clients.rs.

    python3 langchain_loop.py '{"responses": false, "model": "alias", "turns": 3,
                                "stream": false, "reasoning": "low"|null}'
"""
import json
import os
import sys

from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def main(spec):
    options = {}
    if spec.get("reasoning"):
        options["reasoning_effort"] = spec["reasoning"]
    llm = ChatOpenAI(model=spec["model"], base_url=f"{os.environ['SLUICE_EDGE']}/v1",
                     api_key=os.environ["SLUICE_API_KEY"], max_retries=0,
                     use_responses_api=spec.get("responses", False),
                     streaming=spec.get("stream", False), **options)
    llm = llm.bind_tools([get_weather])
    messages = []
    for turn in range(1, spec["turns"] + 1):
        messages.append(HumanMessage(f'Turn {turn}.\nCALL get_weather {{"city":"City{turn}"}}'))
        rounds = 0
        while True:
            reply = llm.invoke(messages)
            messages.append(reply)
            if not reply.tool_calls:
                break
            rounds += 1
            for call in reply.tool_calls:
                messages.append(ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"]))
        answer = reply.text if isinstance(reply.text, str) else reply.text()
        print(json.dumps({"turn": turn, "rounds": rounds, "answer": answer}), flush=True)
        assert rounds == 1, rounds
        assert answer.startswith("Done after 1 tool rounds"), answer
        assert f"sunny in City{turn}" in answer, answer


main(json.loads(sys.argv[1]))
