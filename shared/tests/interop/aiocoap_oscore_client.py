"""aiocoap with OSCORE (RFC 8613) against Pehra's test server with server security on.

Run by shared/tests/interop_aiocoap.rs as:
    python aiocoap_oscore_client.py PORT CONTEXT_DIR
CONTEXT_DIR holds aiocoap's settings.json (sender/recipient IDs, master secret); aiocoap
keeps its sequence numbers beside it (RFC 8613 Appendix B.1.1). Exits non-zero, saying
why, if any check fails.
"""
import asyncio
import sys

import aiocoap
from aiocoap import Code, Message

BIG = bytes(i % 251 for i in range(20 * 1024))
CBOR_MAP = bytes.fromhex("a2616101616282f5f6")


async def main(port: int, context_dir: str) -> None:
    base = f"coap://127.0.0.1:{port}"
    ctx = await aiocoap.Context.create_client_context()
    ctx.client_credentials.load_from_dict(
        {f"{base}/*": {"oscore": {"contextfile": context_dir}}}
    )
    try:
        # The first request after the server's start gets 4.01 with Echo; aiocoap
        # repeats it with the Echo value (RFC 8613 Appendix B.1.2), invisibly.
        r = await ctx.request(Message(code=Code.GET, uri=f"{base}/whoami")).response
        assert r.code == Code.CONTENT and r.payload == b"aiocoap", (r.code, r.payload)
        print("OSCORE GET ok (identity aiocoap)")

        put = Message(code=Code.PUT, uri=f"{base}/store", payload=CBOR_MAP, content_format=60)
        r = await ctx.request(put).response
        assert r.code == Code.CHANGED, r.code
        r = await ctx.request(Message(code=Code.GET, uri=f"{base}/store")).response
        assert r.payload == CBOR_MAP and r.opt.content_format == 60, (r.payload, r.opt.content_format)
        print("OSCORE PUT ok")

        r = await ctx.request(Message(code=Code.GET, uri=f"{base}/big")).response
        assert r.payload == BIG, f"block-wise GET returned {len(r.payload)} bytes"
        r = await ctx.request(Message(code=Code.PUT, uri=f"{base}/big", payload=BIG)).response
        assert r.code == Code.CHANGED and r.payload == f"{len(BIG)}:{sum(BIG)}".encode(), (r.code, r.payload)
        print("OSCORE block-wise ok")

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
        assert values == sorted(values) and len(values) >= 4, values
        print(f"OSCORE observe ok: {values}")
    finally:
        await ctx.shutdown()

    # Without the context: the same request in the clear is not served as aiocoap.
    plain = await aiocoap.Context.create_client_context()
    try:
        r = await plain.request(Message(code=Code.GET, uri=f"{base}/whoami")).response
        assert r.payload != b"aiocoap", r.payload
        print("plain request ok (no identity)")
    finally:
        await plain.shutdown()


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(int(sys.argv[1]), sys.argv[2]), timeout=25))
