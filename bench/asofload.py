"""Analysts asking as-of questions, from a process of their own.

``bench.steps.as_of_load`` starts this while it measures live latency: the load is put on
analytics from outside the measuring process, so that handling its answers never delays
the publisher or the checkpoint's polling (the instrument). It prints ``asking`` once the
clients have started; on SIGTERM it stops asking, lets the requests in flight be answered
(at most ``AS_OF_DRAIN`` seconds), and prints what was answered and refused as JSON.

    python -m bench.asofload URL CLIENTS
"""

from __future__ import annotations

import asyncio
import signal
import sys

import orjson

from bench.steps import AS_OF_DRAIN, as_of_once


async def ask(url: str, clients: int) -> dict[str, int]:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    answered, refused = [0], [0]

    async def client() -> None:
        while not stop.is_set():
            await as_of_once(url, refused)
            answered[0] += 1

    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    print("asking", flush=True)
    await stop.wait()
    await asyncio.wait(tasks, timeout=AS_OF_DRAIN)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"answered": answered[0], "refused": refused[0]}


if __name__ == "__main__":
    print(orjson.dumps(asyncio.run(ask(sys.argv[1], int(sys.argv[2])))).decode(), flush=True)
