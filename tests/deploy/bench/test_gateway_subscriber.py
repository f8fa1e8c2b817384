"""The benchmark's subscriber loses nothing when its connection drops: its persistent session
makes the broker keep QoS 1 batches published meanwhile, and it reconnects to read them.

The connection is dropped by restarting the private broker (it saves its sessions on SIGTERM);
batches are published as soon as the broker is back, while the subscriber is still waiting to
reconnect. With a clean session the broker would answer them "No matching subscribers" and
drop them, and they would never arrive.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from core.protocol import Sample, Source, Telemetry, encode
from deploy.bench.gateway import _Subscriber
from tests.edge_gateway.helpers import PrivateBroker, mqtt_client, wait_for

pytestmark = pytest.mark.services


def _batch(first: int, n: int) -> bytes:
    samples = [Sample(seq=seq, t_ms=1_780_000_000_000 + seq, rpm=900.0)
               for seq in range(first, first + n)]
    return encode(Telemetry(source=Source.GATEWAY, samples=samples))


async def test_batches_published_while_the_subscriber_is_away_arrive(tmp_path: Path) -> None:
    broker = PrivateBroker(tmp_path / "broker")
    with broker:
        sub = _Subscriber(broker.url, "tsub")
        task = asyncio.create_task(sub.run())
        try:
            await sub.wait_subscribed(task, 10)
            topic = "fleet/v1/tsub/v1/telemetry"
            async with mqtt_client(broker.url) as pub:
                await pub.publish(topic, _batch(0, 10), qos=1)
            await wait_for(lambda: sub.count_in(range(10)) == 10, 10, "the first batch")
            await asyncio.to_thread(broker.stop)
            await asyncio.to_thread(broker.start)
            async with mqtt_client(broker.url) as pub:
                for first in range(10, 50, 10):
                    await pub.publish(topic, _batch(first, 10), qos=1)
            await wait_for(lambda: sub.count_in(range(50)) == 50, 20,
                           "the batches published while the subscriber was away")
            sub.check()
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    assert sub.reconnects >= 1
    assert sorted(sub.received) == list(range(50))
