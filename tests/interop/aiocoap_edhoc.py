"""aiocoap's EDHOC initiator (lakers-python) against a Pehra zookeeper.

Run by tests/edhoc.rs as:
    python aiocoap_edhoc.py PORT CREDENTIALS_FILE
CREDENTIALS_FILE is an EDHOC identity's file from `pehra keys add --edhoc`: its static
key and CCS, and the zookeeper's CCS. aiocoap runs EDHOC (method 3, suite 2, credentials
by key ID) on /.well-known/edhoc twice: with the combined EDHOC + OSCORE request of RFC
9668 (message_3 travels with the first OSCORE request; aiocoap's default), and without it
(message_3 alone, answered with message_4); then it sends OSCORE requests in the context
each yields, and the zookeeper's ACLs see the identity of the credential. Exits
non-zero, saying why, if any check fails.
"""
import asyncio
import json
import sys

import aiocoap
import cbor2
from aiocoap import Code, Message


async def main(port: int, path: str) -> None:
    with open(path) as f:
        cred = json.load(f)
    own_ccs = cbor2.loads(bytes.fromhex(cred["edhoc"]["cred"]))
    zookeeper = next(p for p in cred["edhoc_peers"] if p["name"] == "zookeeper")
    peer_ccs = cbor2.loads(bytes.fromhex(zookeeper["cred"]))
    base = f"coap://127.0.0.1:{port}"
    for combined in (True, False):
        await edhoc_then_oscore(base, own_ccs, peer_ccs, cred, combined)

    # The same request in the clear is refused.
    plain = await aiocoap.Context.create_client_context()
    try:
        r = await plain.request(Message(code=Code.GET, uri=f"{base}/z/topics")).response
        assert r.code == Code.UNAUTHORIZED, (r.code, r.payload)
        print("plain GET refused 4.01")
    finally:
        await plain.shutdown()


async def edhoc_then_oscore(base, own_ccs, peer_ccs, cred, combined: bool) -> None:
    how = "combined EDHOC + OSCORE request" if combined else "message_3 alone"
    ctx = await aiocoap.Context.create_client_context()
    ctx.client_credentials.load_from_dict(
        {
            f"{base}/*": {
                "edhoc-oscore": {
                    "suite": 2,
                    "method": 3,
                    "own_cred_style": "by-key-id",
                    "own_cred": {14: own_ccs},
                    "private_key": {1: 2, -1: 1, -4: bytes.fromhex(cred["edhoc"]["private_key"])},
                    "peer_cred": {14: peer_ccs},
                    "use_combined_edhoc": combined,
                }
            }
        }
    )
    try:
        r = await ctx.request(Message(code=Code.GET, uri=f"{base}/z/topics")).response
        assert r.code.is_successful(), (how, r.code, r.payload)
        print(f"{how}: EDHOC + OSCORE GET /z/topics ok: {r.code}")
        r = await ctx.request(Message(code=Code.GET, uri=f"{base}/z/brokers")).response
        assert r.code.is_successful(), (how, r.code, r.payload)
        print(f"{how}: second request in the same context ok: {r.code}")
    finally:
        await ctx.shutdown()


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(int(sys.argv[1]), sys.argv[2]), 30))
