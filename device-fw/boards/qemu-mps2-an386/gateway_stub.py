#!/usr/bin/env python3
"""A tiny stand-in gateway: answers CoAP POST /dev/checkin with 2.04 and a CBOR
CheckInReply ({"pehredar": ..., "directive": "stay_awake" | {"sleep_until": ...},
"pending": n}), encoded by hand (no cbor2 needed). For run.sh, until the real gateway
route serves devices. Exits after --seconds."""
import argparse, socket, struct, sys, time

def cbor_head(major, n):
    if n < 24: return bytes([major << 5 | n])
    if n < 256: return bytes([major << 5 | 24, n])
    if n < 65536: return bytes([major << 5 | 25]) + struct.pack(">H", n)
    if n < 2**32: return bytes([major << 5 | 26]) + struct.pack(">I", n)
    return bytes([major << 5 | 27]) + struct.pack(">Q", n)

def cbor(v):
    if isinstance(v, bool): return b"\xf5" if v else b"\xf4"
    if isinstance(v, int): return cbor_head(0, v) if v >= 0 else cbor_head(1, -1 - v)
    if isinstance(v, str):
        b = v.encode(); return cbor_head(3, len(b)) + b
    if isinstance(v, dict):
        return cbor_head(5, len(v)) + b"".join(cbor(k) + cbor(x) for k, x in v.items())
    raise TypeError(v)

def parse_coap(d):
    if len(d) < 4 or d[0] >> 6 != 1: return None
    t, tkl, code, mid = (d[0] >> 4) & 3, d[0] & 15, d[1], struct.unpack(">H", d[2:4])[0]
    token, i, num, path, fmt = d[4:4 + tkl], 4 + tkl, 0, [], None
    while i < len(d) and d[i] != 0xFF:
        delta, length = d[i] >> 4, d[i] & 15; i += 1
        def ext(x):
            nonlocal i
            if x == 13: x = d[i] + 13; i += 1
            elif x == 14: x = struct.unpack(">H", d[i:i + 2])[0] + 269; i += 2
            return x
        delta = ext(delta); length = ext(length); num += delta
        val = d[i:i + length]; i += length
        if num == 11: path.append(val.decode(errors="replace"))
        if num == 12: fmt = int.from_bytes(val, "big") if val else 0
    payload = d[i + 1:] if i < len(d) else b""
    return t, code, mid, token, path, fmt, payload

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=5683)
    ap.add_argument("--seconds", type=float, default=120)
    a = ap.parse_args()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", a.port)); s.settimeout(0.5)
    print(f"gateway-stub: CoAP on 127.0.0.1:{a.port}", flush=True)
    end, n = time.time() + a.seconds, 0
    while time.time() < end:
        try: d, peer = s.recvfrom(2048)
        except socket.timeout: continue
        m = parse_coap(d)
        if not m: continue
        t, code, mid, token, path, fmt, payload = m
        if t != 0 or code == 0: continue  # only CON requests here
        n += 1
        if path == ["dev", "checkin"] and code == 2:
            now = int(time.time() * 1000)
            directive = "stay_awake" if n % 2 else {"sleep_until": {"at_ms": now + 3000}}
            body = cbor({"pehredar": "broker-1", "pehredar_addr": "10.0.2.2:5683",
                         "gateway_ms": now, "directive": directive, "pending": n - 1})
            rcode, opts = 0x44, bytes([0xC1, 60])  # 2.04, Content-Format 60
            print(f"gateway-stub: checkin #{n} from {peer[0]}:{peer[1]} ({len(payload)} B CBOR) -> 2.04", flush=True)
        else:
            rcode, opts, body = 0x84, b"", b""
        hdr = bytes([0x60 | len(token), rcode]) + struct.pack(">H", mid) + token
        s.sendto(hdr + opts + (b"\xff" + body if body else b""), peer)
    return 0

if __name__ == "__main__":
    sys.exit(main())
