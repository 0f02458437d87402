"""The OpenAI Agents SDK through the Sluice edge, as an app runs it: an agent
with a function tool runs its tool loop (tool call, tool result, answer) on
each of several turns, the history carried by the SDK (`to_input_list`).
Driven by tests/tests/agent_clients.rs against the test upstreams, whose
scripted model calls the tool a `CALL` line names.

    python3 agents_sdk.py '{"api": "responses|chat", "model": "alias", "turns": 3,
                            "stream": false, "reasoning": "low"|null, "image": false}'
"""
import asyncio
import json
import os
import re
import sys

from agents import (Agent, ModelSettings, OpenAIChatCompletionsModel,
                    OpenAIResponsesModel, Runner, ToolOutputImage, function_tool,
                    set_tracing_disabled)
from openai import AsyncOpenAI
from openai.types.shared import Reasoning

# A 1x1 PNG, as a screenshot tool would return it.
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAA"
       "AABJRU5ErkJggg==")


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@function_tool
def screenshot() -> ToolOutputImage:
    """A screenshot of the screen."""
    return ToolOutputImage(image_url=f"data:image/png;base64,{PNG}")


async def main(spec):
    set_tracing_disabled(True)
    client = AsyncOpenAI(base_url=f"{os.environ['SLUICE_EDGE']}/v1",
                         api_key=os.environ["SLUICE_API_KEY"], max_retries=0)
    model_class = OpenAIResponsesModel if spec["api"] == "responses" else OpenAIChatCompletionsModel
    settings = ModelSettings()
    if spec.get("reasoning"):
        settings = ModelSettings(reasoning=Reasoning(effort=spec["reasoning"]))
    agent = Agent(name="assistant", instructions="Use the tools you are asked to use.",
                  tools=[screenshot if spec.get("image") else get_weather],
                  model=model_class(model=spec["model"], openai_client=client),
                  model_settings=settings)
    history = []
    for turn in range(1, spec["turns"] + 1):
        call = "CALL screenshot {}" if spec.get("image") else f'CALL get_weather {{"city":"City{turn}"}}'
        history = history + [{"role": "user", "content": f"Turn {turn}.\n{call}"}]
        if spec.get("stream"):
            result = Runner.run_streamed(agent, history)
            async for _ in result.stream_events():
                pass
        else:
            result = await Runner.run(agent, history)
        answer = result.final_output
        print(json.dumps({"turn": turn, "answer": answer}), flush=True)
        assert answer.startswith("Done after 1 tool rounds"), answer
        if spec.get("image"):
            assert re.search(r"\[image/png \d+ bytes\]", answer), answer
        else:
            assert f"sunny in City{turn}" in answer, answer
        history = result.to_input_list()


asyncio.run(main(json.loads(sys.argv[1])))
