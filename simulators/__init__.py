"""Device simulators driven by one seeded vehicle model (docs/simulators.md).

`vehicle` (the model, faults, ground truth) and `routes` need only the standard library; the
front-ends add pyserial-free ptys (`elm327`, `nmea`), python-can and cantools (`can_bus`), and
aiomqtt (`load`). `cli` is the `fleet sim` entry point.
"""
