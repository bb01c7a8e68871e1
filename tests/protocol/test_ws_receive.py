"""The WS client's lean receive path, against raw bytes written by a real server.

The server side is a `websockets` server whose handler writes hand-made frames straight to its
transport, split at awkward places, so the client's own frame cutting meets every boundary case:
headers and payloads split across reads, 7-, 16- and 64-bit lengths, control frames and fragments
in between (handed to websockets' parser), and malformed or oversized frames (which must fail the
connection as websockets would, after delivering everything before them).
"""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import Awaitable, Callable

import pytest
from websockets.asyncio.server import ServerConnection, serve

from kalshiflow.protocol.ws_client import KalshiWsClient


def frame(payload: bytes, *, opcode: int = 1, fin: bool = True, rsv: int = 0, mask: bool = False) -> bytes:
    """One RFC 6455 frame as a server would write it (unmasked unless ``mask``)."""
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    bit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head += bytes([bit | n])
    elif n < 65_536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if mask:
        key = b"\x01\x02\x03\x04"
        payload = key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + payload


Script = Callable[[ServerConnection], Awaitable[None]]


async def run_client(script: Script, *, max_bytes: int = 1 << 20, until: int | None = None,
                     wait_closed: bool = False, settle_s: float = 0.0) -> tuple[list[bytes], list[str]]:
    """Serve ``script`` to one client; returns (messages received, disconnect reasons)."""
    got: list[bytes] = []
    reasons: list[str] = []
    done = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await script(ws)
        await ws.wait_closed()

    def on_frame(data: bytes, recv_ns: int) -> None:
        assert recv_ns > 0
        got.append(data)
        if until is not None and len(got) >= until:
            done.set()

    def on_disconnect(epoch: int, reason: str) -> None:
        reasons.append(reason)
        done.set()

    async with serve(handler, "127.0.0.1", 0, compression=None, max_size=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        client = KalshiWsClient(f"ws://127.0.0.1:{port}/trade-api/ws/v2", signer=None, on_frame=on_frame,
                                on_disconnect=on_disconnect, max_message_bytes=max_bytes, compression=None,
                                backoff_base_s=30.0, backoff_max_s=30.0, silence_timeout_s=30.0)
        await client.start()
        try:
            await asyncio.wait_for(done.wait(), 20)
            if wait_closed:
                while not reasons:
                    await asyncio.sleep(0.01)
            await asyncio.sleep(settle_s)  # let replies the client wrote reach the server
        finally:
            await client.close()
    return got, reasons


async def write_split(ws: ServerConnection, data: bytes, rng: random.Random, max_chunk: int) -> None:
    """Write ``data`` in random pieces, yielding between them so they arrive as separate reads."""
    pos = 0
    while pos < len(data):
        n = rng.randint(1, max_chunk)
        ws.transport.write(data[pos:pos + n])
        pos += n
        await asyncio.sleep(0.001 if rng.random() < 0.01 else 0)


@pytest.mark.parametrize("max_chunk", [1, 7, 300, 70_000])
async def test_frames_split_anywhere_arrive_whole_and_in_order(max_chunk: int) -> None:
    rng = random.Random(max_chunk)
    sizes = [0, 1, 125, 126, 127, 300, 65_535, 65_536, 70_000] + [rng.randint(1, 400) for _ in range(200)]
    if max_chunk < 10:  # byte-sized writes: keep the stream short
        sizes = [n for n in sizes if n < 20_000] + [65_536]
    payloads = [bytes(rng.randrange(256) for _ in range(min(n, 64))) * (n // 64 + 1) for n in sizes]
    payloads = [p[:n] for p, n in zip(payloads, sizes, strict=True)]
    # Text frames carry UTF-8 (the lean path does not check it); a few binary frames too.
    messages = [(b"x" * len(p) if i % 5 else p, 1 if i % 5 else 2) for i, p in enumerate(payloads)]
    stream = b"".join(frame(p, opcode=op) for p, op in messages)

    async def script(ws: ServerConnection) -> None:
        await write_split(ws, stream, rng, max_chunk)

    got, reasons = await run_client(script, until=len(messages))
    assert got == [p for p, _ in messages]
    assert reasons == []


async def test_control_frames_and_fragments_between_data_frames() -> None:
    rng = random.Random(3)
    stream = (
        frame(b"first")
        + frame(b"heart", opcode=0x9)  # a ping: websockets answers it
        + frame(b"frag-", fin=False)
        + frame(b"ping-inside", opcode=0x9)  # control frames may come between fragments
        + frame(b"ment-", opcode=0, fin=False)
        + frame(b"end", opcode=0)
        + frame(b"after")
        + frame(b"unsolicited", opcode=0xA)  # a pong nobody asked for: ignored
        + frame(b"last")
    )
    pongs: list[bytes] = []

    async def script(ws: ServerConnection) -> None:
        # Count the client's pongs by watching what it sends back.
        original = ws.protocol.recv_frame

        def recv_frame(f: object) -> None:
            if getattr(f, "opcode", None) is not None and f.opcode.value == 0xA:  # type: ignore[attr-defined]
                pongs.append(bytes(f.data))  # type: ignore[attr-defined]
            original(f)  # type: ignore[arg-type]

        ws.protocol.recv_frame = recv_frame  # type: ignore[method-assign]
        await write_split(ws, stream, rng, 5)

    got, reasons = await run_client(script, until=4, settle_s=0.2)
    assert got == [b"first", b"frag-ment-end", b"after", b"last"]
    assert reasons == []
    assert pongs == [b"heart", b"ping-inside"]


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (frame(b"x" * 2000), "1009"),  # over max_message_bytes
        (frame(b"masked", mask=True), "1002"),  # a server must not mask
        (frame(b"rsv", rsv=0x40), "1002"),  # RSV1 without an extension
        (frame(b"op", opcode=0x3), "1002"),  # reserved opcode
        (frame(b"cont", opcode=0), "1002"),  # continuation without a start
        (frame(b"a", fin=False) + frame(b"b"), "1002"),  # a new message inside a fragmented one
    ],
)
async def test_bad_frames_fail_the_connection_after_what_came_before(bad: bytes, code: str) -> None:
    rng = random.Random(5)

    async def script(ws: ServerConnection) -> None:
        await write_split(ws, frame(b"one") + frame(b"two") + bad + frame(b"never"), rng, 3)

    got, reasons = await run_client(script, max_bytes=1000, until=None, wait_closed=True)
    assert got[:2] == [b"one", b"two"]
    assert b"never" not in got
    assert reasons and code in reasons[0]


async def test_server_close_is_a_clean_disconnect() -> None:
    async def script(ws: ServerConnection) -> None:
        ws.transport.write(frame(b"bye") + frame(struct.pack("!H", 1001) + b"going away", opcode=0x8))

    got, reasons = await run_client(script, until=None, wait_closed=True)
    assert got == [b"bye"]
    assert reasons and "1001" in reasons[0]
