"""aiocoap (an independent CoAP implementation) against Pehra's test server.

Run by shared/tests/interop_aiocoap.rs as: python aiocoap_client.py PORT
Exits non-zero, saying why, if any check fails.
"""
import asyncio
import sys

import aiocoap
from aiocoap import Code, Message

BIG = bytes(i % 251 for i in range(20 * 1024))
CBOR_MAP = bytes.fromhex("a2616101616282f5f6")  # {"a": 1, "b": [true, null]}


async def main(port: int) -> None:
    base = f"coap://127.0.0.1:{port}"
    ctx = await aiocoap.Context.create_client_context()
    try:
        r = await ctx.request(Message(code=Code.GET, uri=f"{base}/hello")).response
        assert r.code == Code.CONTENT and r.payload == b"world", (r.code, r.payload)
        print("GET ok")

        put = Message(code=Code.PUT, uri=f"{base}/store", payload=CBOR_MAP, content_format=60)
        r = await ctx.request(put).response
        assert r.code == Code.CHANGED, r.code
        r = await ctx.request(Message(code=Code.GET, uri=f"{base}/store")).response
        assert r.payload == CBOR_MAP and r.opt.content_format == 60, (r.payload, r.opt.content_format)
        print("PUT CBOR ok")

        r = await ctx.request(Message(code=Code.GET, uri=f"{base}/big")).response
        assert r.payload == BIG, f"block-wise GET returned {len(r.payload)} bytes"
        print("block-wise GET ok")

        r = await ctx.request(Message(code=Code.PUT, uri=f"{base}/big", payload=BIG)).response
        expected = f"{len(BIG)}:{sum(BIG)}".encode()
        assert r.code == Code.CHANGED and r.payload == expected, (r.code, r.payload)
        print("block-wise PUT ok")

        # Observe: each notification we receive, we trigger the next with POST /bump.
        request = ctx.request(Message(code=Code.GET, uri=f"{base}/counter", observe=0))
        first = await request.response
        values = [int(first.payload)]
        await ctx.request(Message(code=Code.POST, uri=f"{base}/bump")).response
        async for notification in request.observation:
            values.append(int(notification.payload))
            if len(values) >= 4:
                request.observation.cancel()
                break
            await ctx.request(Message(code=Code.POST, uri=f"{base}/bump")).response
        assert values == sorted(values) and len(set(values)) == len(values), values
        assert len(values) >= 4, values
        print(f"observe ok: {values}")
    finally:
        await ctx.shutdown()


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(int(sys.argv[1])), timeout=25))
