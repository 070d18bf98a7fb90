"""Time to first token of streamed calls through the LiteLLM proxy, minus the same calls straight
to the sluice simulator: the yardstick beside `stream_latency.rs`.

Run by `litellm_yardstick.sh` (which installs LiteLLM and starts its proxy), itself run by
`cargo bench -p sluice --bench stream_latency`. Usage:

    python litellm_yardstick.py SIM_URL PROXY_URL RATE...

For each rate, open loop (a call starts on schedule whether or not earlier ones have answered,
and is timed from its scheduled start), `RUN` seconds, at most `MAX_CALLS` calls:

- direct: `POST {SIM}/v1/messages` with `stream: true`, to the first `content_block_delta`;
- litellm: `POST {PROXY}/v1/chat/completions` with `stream: true` (the proxy calls the sim's
  Anthropic API), to the first chunk with delta content.

Prints a markdown table on stdout; progress on stderr.
"""

import asyncio
import collections
import json
import math
import os
import sys
import time

import aiohttp

RUN = 3.0
MAX_CALLS = 3000
CALL_TIMEOUT = 10.0
PHASE_LIMIT = 30.0
SUSTAINED_P99_MS = 100.0
MAX_TOKENS = 16
MODEL = "claude-haiku-5-5"
PROXY_MODEL = "bench-claude"


async def direct_call(session, sim, i, start):
    body = {
        "model": MODEL,
        "max_tokens": MAX_TOKENS,
        "stream": True,
        "messages": [{"role": "user", "content": f"Answer: question {i}"}],
    }
    headers = {"x-api-key": "sk-bench", "anthropic-version": "2023-06-01"}
    first = None
    async with session.post(f"{sim}/v1/messages", json=body, headers=headers) as resp:
        if resp.status != 200:
            raise Failed(f"HTTP {resp.status}: {(await resp.text())[:200]}")
        async for line in resp.content:
            if first is None and line.startswith(b"event: content_block_delta"):
                first = time.perf_counter() - start
            if line.startswith(b"event: message_stop"):
                break
            if line.startswith(b"event: error"):
                raise Failed("error event")
        # Read to the end so that the connection is reused.
        await resp.read()
    return first


async def proxy_call(session, proxy, i, start):
    body = {
        "model": PROXY_MODEL,
        "max_tokens": MAX_TOKENS,
        "stream": True,
        "messages": [{"role": "user", "content": f"Answer: question {i}"}],
    }
    headers = {"authorization": f"Bearer {os.environ['LITELLM_MASTER_KEY']}"}
    first = None
    done = False
    async with session.post(f"{proxy}/v1/chat/completions", json=body, headers=headers) as resp:
        if resp.status != 200:
            raise Failed(f"HTTP {resp.status}: {(await resp.text())[:200]}")
        async for line in resp.content:
            if not line.startswith(b"data: "):
                continue
            data = line[6:].strip()
            if data == b"[DONE]":
                done = True
                break
            if first is None:
                chunk = json.loads(data)
                if "error" in chunk:
                    raise Failed(f"error chunk: {str(chunk)[:200]}")
                choices = chunk.get("choices") or [{}]
                if (choices[0].get("delta") or {}).get("content"):
                    first = time.perf_counter() - start
        await resp.read()
    if not done:
        raise Failed("stream ended without [DONE]")
    return first


FAILURES = collections.Counter()


class Failed(Exception):
    pass


async def guarded(call, *args):
    try:
        return await asyncio.wait_for(call(*args), CALL_TIMEOUT)
    except Exception as e:  # noqa: BLE001 - any failure of one call is counted, not raised
        FAILURES[f"{call.__name__}: {type(e).__name__} {str(e)[:120]}"] += 1
        return None


async def open_loop(rate, call):
    n = max(1, min(MAX_CALLS, int(rate * RUN)))
    interval = 1.0 / rate
    begin = time.perf_counter()
    tasks = []
    for i in range(n):
        at = begin + i * interval
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(guarded(call, i, at)))
    left = PHASE_LIMIT - (time.perf_counter() - begin)
    done, pending = await asyncio.wait(tasks, timeout=max(left, 0.0))
    for t in pending:
        t.cancel()
    return [t.result() if t in done else None for t in tasks]


def stats(samples):
    ok = sorted(s for s in samples if s is not None)

    def pct(p):
        if not ok:
            return math.nan
        return ok[min(len(ok), max(1, math.ceil(p * len(ok)))) - 1] * 1000.0

    return {"n": len(samples), "failed": len(samples) - len(ok), "p50": pct(0.5), "p99": pct(0.99)}


async def main():
    sim, proxy = sys.argv[1].rstrip("/"), sys.argv[2].rstrip("/")
    rates = [int(r) for r in sys.argv[3:]] or [20, 100, 300, 1000]
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:

        def direct(i, at):
            return direct_call(session, sim, i, at)

        def via(i, at):
            return proxy_call(session, proxy, i, at)

        # Warm both paths.
        await open_loop(20, direct)
        await open_loop(20, via)
        FAILURES.clear()
        rows, sustained = [], None
        for rate in rates:
            d = stats(await open_loop(rate, direct))
            v = stats(await open_loop(rate, via))
            print(
                f"{rate}/s: direct p50 {d['p50']:.2f} p99 {d['p99']:.2f} ({d['failed']} failed);"
                f" litellm p50 {v['p50']:.2f} p99 {v['p99']:.2f} ({v['failed']} failed)",
                file=sys.stderr,
                flush=True,
            )
            if d["failed"] == 0 and v["failed"] == 0 and v["p99"] < SUSTAINED_P99_MS:
                sustained = rate
            rows.append((rate, d, v))
            for reason, count in FAILURES.most_common(5):
                print(f"  {count} x {reason}", file=sys.stderr, flush=True)
            FAILURES.clear()
    print(
        "| rate (calls/s) | calls | direct p50 | direct p99 | LiteLLM p50 | LiteLLM p99 |"
        " added p50 | added p99 | failed |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    def f(x, sign=""):
        return "—" if math.isnan(x) else f"{x:{sign}.2f}"

    for rate, d, v in rows:
        print(
            f"| {rate} | {v['n']} | {f(d['p50'])} | {f(d['p99'])} | {f(v['p50'])} |"
            f" {f(v['p99'])} | {f(v['p50'] - d['p50'], '+')} | {f(v['p99'] - d['p99'], '+')} |"
            f" {d['failed'] + v['failed']} |"
        )
    print(
        f"\nTimes in ms to the first token, open loop from a Python asyncio/aiohttp client,"
        f" timed from each call's scheduled start; {RUN:.0f}s per rate (at most {MAX_CALLS}"
        f" calls), `max_tokens: {MAX_TOKENS}`."
    )
    if sustained is None:
        print(f"No rate tried was sustained (first-token p99 under {SUSTAINED_P99_MS:.0f} ms, nothing failed).")
    else:
        print(
            f"Highest rate sustained (first-token p99 under {SUSTAINED_P99_MS:.0f} ms, nothing"
            f" failed): **{sustained}/s**."
        )


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
