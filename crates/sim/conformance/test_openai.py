"""The official openai SDK (3.57.0), unmodified, against the sim."""

import json

import openai
import pydantic
import pytest

from conftest import httpx, wait_for

MODEL = "gpt-5-mini"
MSGS = [{"role": "user", "content": "Hello there, how are you?"}]


@pytest.fixture
def client():
    return openai.OpenAI(max_retries=0, timeout=20)


def fault(name):
    return {"x-sim-fault": name}


def test_create(client):
    c = client.chat.completions.create(model=MODEL, messages=MSGS)
    assert c.object == "chat.completion" and c.id.startswith("chatcmpl-")
    ch = c.choices[0]
    assert ch.finish_reason == "stop" and ch.message.role == "assistant" and ch.message.content
    assert c.usage.total_tokens == c.usage.prompt_tokens + c.usage.completion_tokens
    assert c.service_tier == "default" and c._request_id.startswith("req_")


def test_models(client):
    ids = [m.id for m in client.models.list()]
    assert MODEL in ids and "gpt-4.1" in ids


def test_raw_headers(client):
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MSGS)
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["x-ratelimit-remaining-requests"].isdigit()
    assert raw.headers["x-ratelimit-reset-tokens"].endswith("s")


def test_length_and_n(client):
    c = client.chat.completions.create(model=MODEL, messages=MSGS, max_completion_tokens=4, n=2)
    assert len(c.choices) == 2 and all(ch.finish_reason == "length" for ch in c.choices)
    assert c.usage.completion_tokens == 8
    c = client.chat.completions.create(model="gpt-4.1", messages=MSGS, max_tokens=4)
    assert c.choices[0].finish_reason == "length"


def test_stream_with_usage(client):
    plain = client.chat.completions.create(model=MODEL, messages=MSGS)
    chunks = list(client.chat.completions.create(model=MODEL, messages=MSGS, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert [c for c in chunks if c.choices][-1].choices[0].finish_reason == "stop"
    chunks = list(client.chat.completions.create(model=MODEL, messages=MSGS, stream=True))
    assert all(c.usage is None for c in chunks)


def test_stream_helper(client):
    with client.chat.completions.stream(model=MODEL, messages=MSGS) as s:
        final = s.get_final_completion()
    assert final.choices[0].message.content


class Ticket(pydantic.BaseModel):
    category: str
    urgent: bool
    score: float


def test_structured_outputs(client):
    c = client.chat.completions.parse(model=MODEL, messages=MSGS, response_format=Ticket)
    assert isinstance(c.choices[0].message.parsed, Ticket)
    c = client.chat.completions.create(model=MODEL, response_format={"type": "json_object"},
                                       messages=[{"role": "user", "content": "Answer in json."}])
    assert isinstance(json.loads(c.choices[0].message.content), dict)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=MSGS, response_format={"type": "json_object"})


def test_tools(client):
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}}]
    c = client.chat.completions.create(model=MODEL, messages=MSGS, tools=tools, tool_choice="required")
    ch = c.choices[0]
    assert ch.finish_reason == "tool_calls" and ch.message.content is None
    call = ch.message.tool_calls[0]
    assert call.function.name == "lookup" and isinstance(json.loads(call.function.arguments)["order_id"], str)


def test_responder_choices(client):
    c = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Pick a colour"}])
    assert c.choices[0].message.content in ("red", "green", "blue")


def test_validation_errors(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="gpt-5", messages=MSGS, max_tokens=10)
    assert e.value.code == "unsupported_parameter" and e.value.param == "max_tokens"
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-nonexistent", messages=MSGS)
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[])


def test_auth_error():
    c = openai.OpenAI(api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        c.chat.completions.create(model=MODEL, messages=MSGS)
    assert e.value.code == "invalid_api_key"


def test_flex(client):
    c = client.chat.completions.create(model=MODEL, messages=MSGS, service_tier="flex")
    assert c.service_tier == "flex"
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model=MODEL, messages=MSGS, service_tier="flex", extra_headers=fault("unavailable"))
    assert e.value.code == "resource_unavailable"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4.1", messages=MSGS, service_tier="flex")


def test_faults_surface_as_sdk_exceptions(client):
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model=MODEL, messages=MSGS, extra_headers=fault("429"))
    assert e.value.response.headers["retry-after"] == "1"
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model=MODEL, messages=MSGS, extra_headers=fault("500"))
    assert e.value.status_code == 500
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model=MODEL, messages=MSGS, extra_headers=fault("529"))
    assert e.value.status_code == 503 and e.value.code == "server_is_overloaded"
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model=MODEL, messages=MSGS, extra_headers=fault("reset"))
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.5).chat.completions.create(model=MODEL, messages=MSGS,
                                                                 extra_headers=fault("stall=2s"))


def test_stream_faults(client):
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, openai.APIConnectionError)):
        for _ in client.chat.completions.create(model=MODEL, messages=MSGS, stream=True, extra_headers=fault("cut")):
            pass
    with pytest.raises(ValueError):  # json.JSONDecodeError
        for _ in client.chat.completions.create(model=MODEL, messages=MSGS, stream=True, extra_headers=fault("malformed")):
            pass
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(model=MODEL, messages=MSGS, stream=True, extra_headers=fault("midstream")):
            pass


def line(custom_id, **body):
    b = {"model": MODEL, "messages": [{"role": "user", "content": f"item {custom_id}"}], **body}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": b})


def upload(client, lines):
    data = ("\n".join(lines) + "\n").encode()
    return client.files.create(file=("requests.jsonl", data, "application/jsonl"), purpose="batch"), data


def test_files(client):
    f, data = upload(client, [line("a"), line("b")])
    assert f.id.startswith("file-") and f.object == "file" and f.purpose == "batch" and f.bytes == len(data)
    assert f.filename == "requests.jsonl" and f.status == "processed"
    assert client.files.retrieve(f.id).id == f.id
    assert f.id in [x.id for x in client.files.list(purpose="batch")]
    assert client.files.content(f.id).read() == data
    d = client.files.delete(f.id)
    assert d.deleted and d.id == f.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("notes.txt", b"x", "text/plain"), purpose="batch")


def wait_status(client, batch_id, statuses):
    return wait_for(lambda: (b := client.batches.retrieve(batch_id)).status in statuses and b)


def read_lines(client, file_id):
    if not file_id:
        return {}
    text = client.files.content(file_id).read().decode()
    return {json.loads(l)["custom_id"]: json.loads(l) for l in text.splitlines() if l}


def test_batch_lifecycle(client):
    f, _ = upload(client, [line(f"ok-{i}") for i in range(4)] + [line("x-sim-errored"), line("bad", max_tokens=5)])
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                              metadata={"job": "conformance"})
    assert b.status == "validating" and b.object == "batch" and b.metadata == {"job": "conformance"}
    b = wait_status(client, b.id, {"completed"})
    assert b.request_counts.total == 6 and b.request_counts.completed == 4 and b.request_counts.failed == 2
    assert b.in_progress_at and b.finalizing_at and b.completed_at
    out = read_lines(client, b.output_file_id)
    err = read_lines(client, b.error_file_id)
    assert set(out) == {f"ok-{i}" for i in range(4)}
    assert out["ok-0"]["response"]["status_code"] == 200
    assert out["ok-0"]["response"]["body"]["object"] == "chat.completion"
    assert err["x-sim-errored"]["response"]["status_code"] == 500
    assert err["bad"]["response"]["body"]["error"]["code"] == "unsupported_parameter"
    assert client.files.retrieve(b.output_file_id).purpose == "batch_output"
    assert b.id in [x.id for x in client.batches.list(limit=100)]


def test_batch_cancel(client):
    f, _ = upload(client, [line(f"c-{i}") for i in range(3)])
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    c = client.batches.cancel(b.id)
    assert c.status == "cancelling"
    b = wait_status(client, b.id, {"cancelled"})
    err = read_lines(client, b.error_file_id)
    assert all(v["error"]["code"] == "batch_cancelled" for v in err.values())


def test_batch_expired_and_failed(client):
    f, _ = upload(client, [line("e-1"), line("e-2")])
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                              metadata={"sim_fault": "expire"})
    b = wait_status(client, b.id, {"expired"})
    err = read_lines(client, b.error_file_id)
    assert {v["error"]["code"] for v in err.values()} == {"batch_expired"} and b.output_file_id is None
    f, _ = upload(client, [line("d"), line("d")])  # duplicate custom_id
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    b = wait_status(client, b.id, {"failed"})
    assert b.errors.data[0].code == "duplicate_custom_id" and b.errors.data[0].line == 2
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-missing", endpoint="/v1/chat/completions", completion_window="24h")


def test_batch_list_pagination(client):
    f, _ = upload(client, [line("p")])
    ids = [client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h").id
           for _ in range(3)]
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == [ids[2], ids[1]] and page.has_more
    seen = [b.id for b in client.batches.list(limit=2)]
    assert seen.index(ids[2]) < seen.index(ids[1]) < seen.index(ids[0])
