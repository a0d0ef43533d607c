"""Send CoAP requests with aiocoap and print each response as one JSON line.

Usage: python aiocoap_requests.py [--together] < requests.json

The input is a JSON array of requests, sent one after the other (with --together: all
at once, each from its own client endpoint):
  {"method": "PUT", "uri": "coap://127.0.0.1:5683/ps/data/t",
   "options": [[1, "0a0b"], [5, ""]],          # option number, value in hex
   "content_format": 60,                        # optional
   "payload": "text" | "payload_hex": "a1..." | "payload_diag": "{0: \"t\"}"}
Each output line: {"code": "2.04", "options": [[4, "0102"], ...],
                   "payload_hex": "...", "payload_diag": "..." (if it is CBOR)}
Bounded by a 20 s timeout per request.
"""
import asyncio
import json
import sys

import aiocoap
import cbor2
import cbor_diag
from aiocoap import Code, Message
from aiocoap.optiontypes import OpaqueOption, UintOption


def build(spec):
    method = spec["method"].upper()
    code = Code.iPATCH if method == "IPATCH" else getattr(Code, method)
    msg = Message(code=code, uri=spec["uri"])
    if "payload" in spec:
        msg.payload = spec["payload"].encode()
    elif "payload_hex" in spec:
        msg.payload = bytes.fromhex(spec["payload_hex"])
    elif "payload_diag" in spec:
        msg.payload = cbor_diag.diag2cbor(spec["payload_diag"])
    if "content_format" in spec:
        msg.opt.content_format = spec["content_format"]
    for number, value in spec.get("options", []):
        msg.opt.add_option(OpaqueOption(number, bytes.fromhex(value)))
    for number, value in spec.get("uint_options", []):
        msg.opt.add_option(UintOption(number, value))
    return msg


def describe(response):
    out = {
        "code": f"{int(response.code) >> 5}.{int(response.code) & 31:02d}",
        "options": [[o.number, o.encode().hex()] for o in response.opt.option_list()],
        "payload_hex": response.payload.hex(),
    }
    try:
        cbor2.loads(response.payload)
        out["payload_diag"] = cbor_diag.cbor2diag(response.payload)
    except Exception:
        pass
    return out


async def main():
    specs = json.load(sys.stdin)
    ctx = await aiocoap.Context.create_client_context()
    try:
        if "--together" in sys.argv:
            # All at once (each from its own client context, so none waits for another),
            # the answers printed in the order of the requests.
            contexts = [await aiocoap.Context.create_client_context() for _ in specs]
            try:
                responses = await asyncio.wait_for(
                    asyncio.gather(*(c.request(build(s)).response for c, s in zip(contexts, specs))),
                    timeout=30,
                )
            finally:
                for c in contexts:
                    await c.shutdown()
            for response in responses:
                print(json.dumps(describe(response)), flush=True)
            return
        for spec in specs:
            response = await asyncio.wait_for(ctx.request(build(spec)).response, timeout=20)
            print(json.dumps(describe(response)), flush=True)
    finally:
        await ctx.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
