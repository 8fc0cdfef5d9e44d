"""Drives a running j1msky server with the official OpenAI and Anthropic Python SDKs,
unchanged, and prints a JSON report for the Rust test to assert on.

Environment: J1MSKY_BASE (http://host:port), J1MSKY_KEY (a customer API key)."""

import json
import os

import anthropic
import openai

base = os.environ["J1MSKY_BASE"].rstrip("/")
key = os.environ["J1MSKY_KEY"]
report = {}

oa = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
models = [m.id for m in oa.models.list()]
report["models"] = models

done = oa.chat.completions.create(
    model="auto",
    messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}],
    max_tokens=64,
)
assert done.choices[0].message.content.startswith("[simulated]"), done
assert done.usage.completion_tokens == 32, done.usage
report["openai_model"] = done.model

stream = oa.chat.completions.create(
    model="auto",
    messages=[{"role": "user", "content": "Stream a hello"}],
    max_tokens=64,
    stream=True,
    stream_options={"include_usage": True},
)
text, usage = "", None
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        text += chunk.choices[0].delta.content
    if chunk.usage is not None:
        usage = chunk.usage
assert text.startswith("[simulated]"), text
report["openai_stream_tokens"] = usage.completion_tokens

an = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
msg = an.messages.create(
    model="claude-sonnet",
    max_tokens=64,
    system="Be brief.",
    messages=[{"role": "user", "content": "Say hello"}],
)
assert msg.content[0].text.startswith("[simulated]"), msg
assert msg.usage.output_tokens == 32, msg.usage
report["anthropic_model"] = msg.model

with an.messages.stream(
    model="claude-sonnet", max_tokens=64, messages=[{"role": "user", "content": "Stream a hello"}]
) as s:
    streamed = "".join(s.text_stream)
    final = s.get_final_message()
assert streamed.startswith("[simulated]"), streamed
report["anthropic_stream_tokens"] = final.usage.output_tokens

# The customer's hourly cap (set low by the test): the SDK sees a 429 RateLimitError.
report["rate_limited_status"] = None
for _ in range(20):
    try:
        oa.chat.completions.create(model="auto", messages=[{"role": "user", "content": "again"}], max_tokens=8)
    except openai.RateLimitError as e:
        report["rate_limited_status"] = e.status_code
        report["rate_limited_code"] = e.body.get("code") if isinstance(e.body, dict) else None
        break

try:
    openai.OpenAI(base_url=base + "/v1", api_key="jk_wrong", max_retries=0).chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "x"}]
    )
except openai.AuthenticationError as e:
    report["bad_key_status"] = e.status_code

try:
    an.messages.create(model="no-such-model", max_tokens=8, messages=[{"role": "user", "content": "x"}])
except anthropic.NotFoundError as e:
    report["anthropic_unknown_model_status"] = e.status_code

print(json.dumps(report))
