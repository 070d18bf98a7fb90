"""The official anthropic SDK (2.13.0 and 0.125.0), unmodified, against the sim."""

import json

import anthropic
import pytest

from conftest import httpx, wait_for

V2 = int(anthropic.__version__.split(".")[0]) >= 2
MODEL = "claude-haiku-5-5"
USER = [{"role": "user", "content": "Hello there, how are you?"}]


@pytest.fixture
def client():
    return anthropic.Anthropic(max_retries=0, timeout=20)


def test_create(client):
    m = client.messages.create(model=MODEL, max_tokens=500, messages=USER, metadata={"user_id": "u-123"})
    assert m.type == "message" and m.role == "assistant" and m.model == MODEL
    assert m.stop_reason == "end_turn" and m.stop_sequence is None
    assert m.content[0].type == "text" and m.content[0].text
    assert m.usage.input_tokens > 0 and m.usage.output_tokens == -(-len(m.content[0].text) // 4)
    assert m._request_id.startswith("req_")


def test_raw_response_headers(client):
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=20, messages=USER)
    assert raw.headers["request-id"].startswith("req_")
    assert int(raw.headers["anthropic-ratelimit-requests-remaining"]) >= 0
    assert raw.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    assert raw.parse().type == "message"


def test_max_tokens(client):
    m = client.messages.create(model=MODEL, max_tokens=3, messages=USER)
    assert m.stop_reason == "max_tokens" and m.usage.output_tokens == 3


def test_responder_and_stop_sequence(client):
    q = [{"role": "user", "content": "What is the capital of France?"}]
    m = client.messages.create(model=MODEL, max_tokens=100, messages=q)
    assert m.content[0].text == "The capital of France is a fine city."
    m = client.messages.create(model=MODEL, max_tokens=100, messages=q, stop_sequences=[" is"])
    assert m.stop_reason == "stop_sequence" and m.stop_sequence == " is"
    assert m.content[0].text == "The capital of France"


def test_json_when_asked(client):
    m = client.messages.create(model=MODEL, max_tokens=500, system="Reply in JSON only.", messages=USER)
    assert isinstance(json.loads(m.content[0].text), dict)
    m = client.messages.create(model=MODEL, max_tokens=500, messages=[{"role": "user", "content": "I was charged twice!"}])
    assert json.loads(m.content[0].text) == {"category": "billing", "urgency": "high"}
    schema = {"type": "object", "properties": {"label": {"type": "string", "enum": ["spam", "ham"]}, "score": {"type": "number"}},
              "required": ["label", "score"], "additionalProperties": False}
    m = client.messages.create(model=MODEL, max_tokens=500, messages=USER,
                               extra_body={"output_config": {"format": {"type": "json_schema", "schema": schema}}})
    v = json.loads(m.content[0].text)
    assert v["label"] in ("spam", "ham") and isinstance(v["score"], (int, float))


def test_stream_matches_plain(client):
    plain = client.messages.create(model=MODEL, max_tokens=400, messages=USER)
    with client.messages.stream(model=MODEL, max_tokens=400, messages=USER) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == plain.content[0].text == final.content[0].text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == plain.usage.output_tokens
    assert final.usage.input_tokens == plain.usage.input_tokens


def test_stream_raw_events(client):
    events = list(client.messages.create(model=MODEL, max_tokens=50, messages=USER, stream=True))
    types = [e.type for e in events]
    assert types[0] == "message_start" and types[-1] == "message_stop"
    assert types[1] == "content_block_start" and "content_block_delta" in types
    assert types[-2] == "message_delta" and events[-2].usage.output_tokens > 0


def test_tool_use(client):
    tools = [{"name": "get_weather", "description": "Weather", "input_schema": {
        "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}}]
    m = client.messages.create(model=MODEL, max_tokens=300, messages=USER, tools=tools,
                               tool_choice={"type": "tool", "name": "get_weather"})
    assert m.stop_reason == "tool_use"
    block = m.content[0]
    assert block.type == "tool_use" and block.name == "get_weather" and isinstance(block.input["city"], str)
    with client.messages.stream(model=MODEL, max_tokens=300, messages=USER, tools=tools,
                                tool_choice={"type": "tool", "name": "get_weather"}) as s:
        final = s.get_final_message()
    assert final.content[0].type == "tool_use" and final.content[0].input == block.input


def test_models(client):
    ids = [m.id for m in client.models.list()]
    assert MODEL in ids and all(i.startswith("claude-") for i in ids)


def test_count_tokens(client):
    r = client.messages.count_tokens(model=MODEL, messages=USER)
    m = client.messages.create(model=MODEL, max_tokens=5, messages=USER)
    assert r.input_tokens == m.usage.input_tokens


def test_validation_errors(client):
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model=MODEL, max_tokens=5, messages=[])
    assert e.value.status_code == 400 and e.value.body["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="claude-nonexistent-9", max_tokens=5, messages=USER)
    if V2:
        # 2026-10-21 (sent by SDK 2.x) refuses temperature, even through extra_body.
        with pytest.raises(anthropic.BadRequestError):
            client.messages.create(model=MODEL, max_tokens=5, messages=USER, extra_body={"temperature": 0.5})
    else:
        # 0.x sends 2023-06-01, under which temperature is fine.
        assert client.messages.create(model=MODEL, max_tokens=5, messages=USER, temperature=0.5).type == "message"


def test_auth_error():
    # sim.toml lists the accepted keys; any other is refused with Anthropic's 401 body.
    c = anthropic.Anthropic(api_key="sk-ant-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as e:
        c.messages.create(model=MODEL, max_tokens=5, messages=USER)
    assert e.value.body["error"]["type"] == "authentication_error"


def fault(name):
    return {"x-sim-fault": name}


def test_faults_surface_as_sdk_exceptions(client):
    with pytest.raises(anthropic.RateLimitError) as e:
        client.messages.create(model=MODEL, max_tokens=5, messages=USER, extra_headers=fault("429"))
    assert e.value.response.headers["retry-after"] == "1"
    assert e.value.body["error"]["type"] == "rate_limit_error"
    with pytest.raises(anthropic.InternalServerError) as e:
        client.messages.create(model=MODEL, max_tokens=5, messages=USER, extra_headers=fault("500"))
    assert e.value.status_code == 500
    with pytest.raises(anthropic.OverloadedError) as e:
        client.messages.create(model=MODEL, max_tokens=5, messages=USER, extra_headers=fault("529"))
    assert e.value.status_code == 529 and e.value.body["error"]["type"] == "overloaded_error"
    with pytest.raises(anthropic.APIConnectionError):
        client.messages.create(model=MODEL, max_tokens=5, messages=USER, extra_headers=fault("reset"))
    with pytest.raises(anthropic.APITimeoutError):
        client.with_options(timeout=0.5).messages.create(model=MODEL, max_tokens=5, messages=USER,
                                                         extra_headers=fault("stall=2s"))


def test_sdk_retries_then_fails(client):
    # The SDK retries 429s on its own; every attempt is refused, so the error surfaces at the end.
    with pytest.raises(anthropic.RateLimitError):
        client.with_options(max_retries=1).messages.create(model=MODEL, max_tokens=5, messages=USER,
                                                           extra_headers=fault("429"))


def test_stream_faults(client):
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, anthropic.APIConnectionError)):
        with client.messages.stream(model=MODEL, max_tokens=200, messages=USER, extra_headers=fault("cut")) as s:
            for _ in s.text_stream:
                pass
    with pytest.raises(ValueError):  # json.JSONDecodeError
        with client.messages.stream(model=MODEL, max_tokens=200, messages=USER, extra_headers=fault("malformed")) as s:
            for _ in s.text_stream:
                pass
    with pytest.raises(anthropic.APIStatusError) as e:
        with client.messages.stream(model=MODEL, max_tokens=200, messages=USER, extra_headers=fault("midstream")) as s:
            for _ in s.text_stream:
                pass
    assert e.value.body["error"]["type"] == "overloaded_error"


def params(text="Summarise: all is well.", **extra):
    return {"model": MODEL, "max_tokens": 200, "messages": [{"role": "user", "content": text}], **extra}


def wait_ended(client, batch_id):
    return wait_for(lambda: (b := client.messages.batches.retrieve(batch_id)).processing_status == "ended" and b)


def test_batch_lifecycle(client):
    reqs = [{"custom_id": f"ok-{i}", "params": params(f"item {i}")} for i in range(5)]
    reqs.append({"custom_id": "x-sim-errored", "params": params()})
    reqs.append({"custom_id": "bad", "params": {"model": MODEL, "messages": USER}})  # no max_tokens
    b = client.messages.batches.create(requests=reqs)
    assert b.id.startswith("msgbatch_") and b.processing_status == "in_progress"
    assert b.request_counts.processing == 7 and b.results_url is None and b.ended_at is None
    b = wait_ended(client, b.id)
    assert b.request_counts.succeeded == 5 and b.request_counts.errored == 2 and b.request_counts.processing == 0
    assert b.results_url.startswith("http://") and b.ended_at is not None
    results = {r.custom_id: r for r in client.messages.batches.results(b.id)}
    assert set(results) == {r["custom_id"] for r in reqs}
    ok = results["ok-0"].result
    assert ok.type == "succeeded" and ok.message.content[0].text and ok.message.usage.output_tokens > 0
    assert results["x-sim-errored"].result.type == "errored"
    assert results["x-sim-errored"].result.error.error.type == "api_error"
    assert results["bad"].result.error.error.type == "invalid_request_error"
    deleted = client.messages.batches.delete(b.id)
    assert deleted.id == b.id and deleted.type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(b.id)


def test_batch_cancel(client):
    b = client.messages.batches.create(requests=[{"custom_id": f"c-{i}", "params": params()} for i in range(3)])
    c = client.messages.batches.cancel(b.id)
    assert c.processing_status in ("canceling", "ended") and c.cancel_initiated_at is not None
    if c.processing_status == "canceling":
        with pytest.raises(anthropic.BadRequestError):  # not deletable until it has ended
            client.messages.batches.delete(b.id)
    b = wait_ended(client, b.id)
    counts = b.request_counts
    assert counts.canceled + counts.succeeded == 3
    kinds = {r.result.type for r in client.messages.batches.results(b.id)}
    assert kinds <= {"canceled", "succeeded"}


def test_batch_expires_whole(client):
    b = client.messages.batches.create(requests=[{"custom_id": "e-1", "params": params()}], extra_headers=fault("expire"))
    b = wait_ended(client, b.id)
    assert b.request_counts.expired == 1
    assert [r.result.type for r in client.messages.batches.results(b.id)] == ["expired"]


def test_batch_list_pagination(client):
    ids = [client.messages.batches.create(requests=[{"custom_id": "p", "params": params()}]).id for _ in range(3)]
    page = client.messages.batches.list(limit=2)
    assert len(page.data) == 2 and page.has_more
    assert page.data[0].id == ids[-1]  # newest first
    seen = [b.id for b in client.messages.batches.list(limit=2)]  # auto-paging
    assert seen.index(ids[2]) < seen.index(ids[1]) < seen.index(ids[0])
