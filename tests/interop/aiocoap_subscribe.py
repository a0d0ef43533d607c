"""Subscribe to a Pehra pub-sub topic with aiocoap (GET + Observe on ps/data/TOPIC).

Usage: python aiocoap_subscribe.py HOST:PORT TOPIC COUNT
Prints "observing" once registered, then each notification's payload, one per line,
and exits after COUNT notifications (bounded by a 25 s timeout).
"""
import asyncio
import sys

import aiocoap
from aiocoap import Code, Message


async def main(addr: str, topic: str, count: int) -> None:
    ctx = await aiocoap.Context.create_client_context()
    try:
        request = ctx.request(Message(code=Code.GET, uri=f"coap://{addr}/ps/data/{topic}", observe=0))
        first = await request.response
        assert first.code == Code.CONTENT, first.code
        print("observing", flush=True)
        seen = 0
        async for notification in request.observation:
            print(notification.payload.decode(), flush=True)
            seen += 1
            if seen >= count:
                request.observation.cancel()
                break
    finally:
        await ctx.shutdown()


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2], int(sys.argv[3])), timeout=25))
