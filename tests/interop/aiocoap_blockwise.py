"""Large values through aiocoap's own block-wise handling, for tests/blockwise.rs.

Usage:
  python aiocoap_blockwise.py get HOST:PORT PATH OUT
      GET coap://HOST:PORT/PATH; writes the body to OUT, prints the code.
  python aiocoap_blockwise.py observe HOST:PORT PATH COUNT OUT
      GET + Observe; prints "observing" once registered, then the length of each
      notification; writes the last one to OUT after COUNT notifications.
  python aiocoap_blockwise.py midway HOST:PORT TOPIC
      Block-wise GET of ps/data/TOPIC by hand, one request (so one token) per block:
      block 0, then a publication of 'B's through the same broker, then the other
      blocks. Prints one JSON line: the ETag of each block and the letters received.
Every mode is bounded by a 25 s timeout.
"""
import asyncio
import json
import sys

import aiocoap
from aiocoap import Code, Message
from aiocoap.optiontypes import BlockOption


async def get(ctx, uri: str, out: str) -> None:
    response = await ctx.request(Message(code=Code.GET, uri=uri)).response
    with open(out, "wb") as f:
        f.write(response.payload)
    print(response.code, flush=True)


async def observe(ctx, uri: str, count: int, out: str) -> None:
    request = ctx.request(Message(code=Code.GET, uri=uri, observe=0))
    first = await request.response
    assert first.code == Code.CONTENT, first.code
    print("observing", flush=True)
    seen = 0
    async for notification in request.observation:
        print(len(notification.payload), flush=True)
        seen += 1
        if seen >= count:
            with open(out, "wb") as f:
                f.write(notification.payload)
            request.observation.cancel()
            break


async def midway(ctx, addr: str, topic: str) -> None:
    uri = f"coap://{addr}/ps/data/{topic}"
    etags, body, num = [], b"", 0
    while True:
        message = Message(code=Code.GET, uri=uri)
        message.opt.block2 = BlockOption.BlockwiseTuple(num, False, 6)
        # One request per block, without aiocoap's own reassembly.
        response = await ctx.request(message, handle_blockwise=False).response
        assert response.code == Code.CONTENT, response.code
        etags.append(response.opt.etag.hex() if response.opt.etag else None)
        body += response.payload
        if num == 0:
            put = Message(code=Code.PUT, uri=uri, payload=b"B" * len(body) * 20)
            done = await ctx.request(put).response
            assert done.code.is_successful(), done.code
        if not response.opt.block2.more:
            break
        num += 1
    print(json.dumps({"etags": etags, "letters": sorted(set(body.decode())), "len": len(body)}), flush=True)


async def main(args) -> None:
    ctx = await aiocoap.Context.create_client_context()
    try:
        mode = args[0]
        if mode == "get":
            await get(ctx, f"coap://{args[1]}/{args[2]}", args[3])
        elif mode == "observe":
            await observe(ctx, f"coap://{args[1]}/{args[2]}", int(args[3]), args[4])
        elif mode == "midway":
            await midway(ctx, args[1], args[2])
    finally:
        await ctx.shutdown()


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(sys.argv[1:]), timeout=25))
