"""Downlink commands: valid ones run, everything else is rejected with a reason."""

from __future__ import annotations

import msgspec

from core.protocol import Command, Status, encode
from edge_gateway.commands import UNPARSABLE_ID, CommandHandler
from edge_gateway.sampler import Rates

T0 = 1_780_000_000_000


def _handler(read_dtcs: object = None) -> tuple[CommandHandler, list[int]]:
    published: list[int] = []
    handler = CommandHandler(Rates(), status=lambda: Status(state="online", t_ms=T0),
                             read_dtcs=read_dtcs,  # type: ignore[arg-type]
                             publish_status=lambda: published.append(1))
    return handler, published


async def test_set_rate_changes_the_rate() -> None:
    handler, _ = _handler()
    ack = await handler.handle(encode(Command(id="c1", name="set_rate",
                                              args={"signal": "gps_speed", "rate_hz": 5})))
    assert ack.ok, ack.reason
    assert ack.id == "c1"
    assert handler.rates.rate_hz("gps_speed") == 5.0


async def test_bad_set_rate_arguments_are_rejected() -> None:
    handler, _ = _handler()
    for args, reason in [({"signal": "nope", "rate_hz": 1}, "unknown signal"),
                         ({"signal": "gps_speed", "rate_hz": 1000}, "outside"),
                         ({"signal": "gps_speed"}, "rate_hz"),
                         ({"signal": "gps_speed", "rate_hz": 1, "x": 1}, "unknown argument")]:
        ack = await handler.handle(encode(Command(id="c2", name="set_rate", args=args)))
        assert not ack.ok
        assert ack.reason is not None
        assert reason in ack.reason


async def test_unknown_malformed_and_expired_commands() -> None:
    handler, _ = _handler()
    ack = await handler.handle(b'{"v":1,"id":"c3","name":"self_destruct"}')
    assert not ack.ok
    assert ack.id == "c3"
    assert ack.reason is not None
    assert ack.reason.startswith("invalid")
    ack = await handler.handle(b"{not json")
    assert not ack.ok
    assert ack.id == UNPARSABLE_ID
    ack = await handler.handle(encode(Command(id="c4", name="report_status",
                                              expires_ms=T0)))
    assert not ack.ok
    assert ack.reason == "expired"
    assert handler.rejected == 3


async def test_read_dtcs_without_obd_and_with_it() -> None:
    handler, _ = _handler()
    ack = await handler.handle(encode(Command(id="c5", name="read_dtcs")))
    assert not ack.ok
    assert "no OBD-II" in (ack.reason or "")

    async def read() -> dict[str, list[str]]:
        return {"stored": ["P0301"], "pending": []}

    handler, _ = _handler(read)
    ack = await handler.handle(encode(Command(id="c6", name="read_dtcs")))
    assert ack.ok
    assert ack.result == {"stored": ["P0301"], "pending": []}


async def test_report_status_publishes_and_answers() -> None:
    handler, published = _handler()
    ack = await handler.handle(encode(Command(id="c7", name="report_status")))
    assert ack.ok
    assert published == [1]
    assert ack.result is not None
    assert ack.result["state"] == "online"
    assert ack.result["rates_hz"]["gps_speed"] == 1.0
    msgspec.json.encode(ack)  # the result is plain JSON
