"""Observe a CoAP resource with aiocoap until the observation ends.

Usage: python aiocoap_observe.py URI [TIMEOUT_S]
Prints one line per message: "first CODE PAYLOAD" for the response to the registration,
"notification CODE PAYLOAD" for each notification, and at the end "ended CODE" when the
server ended the observation with an error notification (RFC 7641 §3.2, CODE is its
code), "ended" if it ended otherwise, or "timeout". Payloads are printed as text.
"""
import asyncio
import sys

import aiocoap
from aiocoap import Code, Message


def code(message):
    c = int(message.code)
    return f"{c >> 5}.{c & 31:02d}"


async def main(uri: str, timeout: float) -> None:
    ctx = await aiocoap.Context.create_client_context()
    try:
        request = ctx.request(Message(code=Code.GET, uri=uri, observe=0))
        first = await request.response
        print(f"first {code(first)} {first.payload.decode(errors='replace')}", flush=True)
        if not first.code.is_successful():
            return
        try:
            async def follow():
                async for n in request.observation:
                    if not n.code.is_successful():
                        print(f"ended {code(n)}", flush=True)
                        return
                    print(f"notification {code(n)} {n.payload.decode(errors='replace')}", flush=True)
                print("ended", flush=True)

            await asyncio.wait_for(follow(), timeout=timeout)
        except asyncio.TimeoutError:
            print("timeout", flush=True)
        except aiocoap.error.ResponseWrappingError as e:
            print(f"ended {code(e.coapmessage)}", flush=True)
        except Exception as e:  # the observation ended with an error of another kind
            print(f"ended {type(e).__name__} {e}", flush=True)
    finally:
        await ctx.shutdown()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 25.0))
