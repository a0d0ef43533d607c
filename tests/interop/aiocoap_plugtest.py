"""aiocoap as the client of the ETSI plugtest TDs (tests/plugtest.rs).

Usage:
  python aiocoap_plugtest.py requests < requests.json
  python aiocoap_plugtest.py observe URI [NON] [COUNT]

requests: a JSON array, sent one after the other from one client context:
  {"method": "GET", "uri": "coap://127.0.0.1:5683/ps/data/t", "mtype": "NON",
   "options": [[4, "0a0b"]],                 # option number, value in hex
   "content_format": 0, "payload": "text" (or "payload_hex": "a1..."),
   "block2_szx": 2}                          # fetch block by block by hand (early
                                             # negotiation), one output line per block
Each output line describes one message received: {"code": "2.05", "mtype": "ACK",
  "mid": 1234, "request_mid": 1233, "token_hex": "...", "request_token_hex": "...",
  "options": [[4, "0102"], ...], "payload_hex": "..."}.

observe: registers (CON, or NON) and prints the response and then each notification as
one such line, COUNT of them in all (default 3), or until the observation ends (a last
line {"ended": CODE-or-null}); bounded by 20 s.
"""
import asyncio
import json
import sys

import aiocoap
from aiocoap import CON, NON, Code, Message
from aiocoap.optiontypes import BlockOption, OpaqueOption


def code_text(code):
    return f"{int(code) >> 5}.{int(code) & 31:02d}"


def build(spec):
    method = spec["method"].upper()
    msg = Message(code=getattr(Code, method), uri=spec["uri"])
    msg.mtype = NON if spec.get("mtype") == "NON" else CON
    if "payload" in spec:
        msg.payload = spec["payload"].encode()
    elif "payload_hex" in spec:
        msg.payload = bytes.fromhex(spec["payload_hex"])
    if "content_format" in spec:
        msg.opt.content_format = spec["content_format"]
    for number, value in spec.get("options", []):
        msg.opt.add_option(OpaqueOption(number, bytes.fromhex(value)))
    return msg


def describe(response, request=None):
    out = {
        "code": code_text(response.code),
        "mtype": str(response.mtype).split(".")[-1],
        "mid": response.mid,
        "token_hex": response.token.hex(),
        "options": [[o.number, o.encode().hex()] for o in response.opt.option_list()],
        "payload_hex": response.payload.hex(),
    }
    if request is not None:
        out["request_mid"] = request.mid
        out["request_token_hex"] = request.token.hex()
    return out


async def requests(ctx, specs):
    for spec in specs:
        if "block2_szx" in spec:
            num = 0
            while True:
                msg = build(spec)
                msg.opt.block2 = BlockOption.BlockwiseTuple(num, False, spec["block2_szx"])
                req = ctx.request(msg, handle_blockwise=False)
                response = await asyncio.wait_for(req.response, timeout=20)
                print(json.dumps(describe(response, msg)), flush=True)
                block = response.opt.block2
                if block is None or not block.more:
                    break
                # Continue at the server's block size (it may have chosen a smaller one).
                num = block.block_number + 1
                spec = dict(spec, block2_szx=block.size_exponent)
            continue
        msg = build(spec)
        req = ctx.request(msg)
        response = await asyncio.wait_for(req.response, timeout=20)
        print(json.dumps(describe(response, msg)), flush=True)


async def observe(ctx, uri, non, count):
    msg = Message(code=Code.GET, uri=uri, observe=0)
    msg.mtype = NON if non else CON
    req = ctx.request(msg)
    first = await asyncio.wait_for(req.response, timeout=20)
    print(json.dumps(describe(first, msg)), flush=True)
    if not first.code.is_successful():
        return
    seen = 1
    try:
        async def follow():
            nonlocal seen
            async for n in req.observation:
                print(json.dumps(describe(n)), flush=True)
                seen += 1
                if not n.code.is_successful() or seen >= count:
                    return
            print(json.dumps({"ended": None}), flush=True)

        await asyncio.wait_for(follow(), timeout=20)
    except aiocoap.error.ResponseWrappingError as e:
        print(json.dumps(describe(e.coapmessage)), flush=True)
        print(json.dumps({"ended": code_text(e.coapmessage.code)}), flush=True)
    req.observation.cancel()


async def main():
    ctx = await aiocoap.Context.create_client_context()
    try:
        if sys.argv[1] == "requests":
            await requests(ctx, json.load(sys.stdin))
        else:
            non = len(sys.argv) > 3 and sys.argv[3] == "NON"
            count = int(sys.argv[4]) if len(sys.argv) > 4 else 3
            await observe(ctx, sys.argv[2], non, count)
    finally:
        await ctx.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
