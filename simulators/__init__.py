"""Device simulators driven by one seeded vehicle model (docs/simulators.md).

`vehicle` (the model, faults, ground truth) and `routes` need only the standard library; the
ELM327 and NMEA front-ends serve pseudo-terminals (the ELM327 encodes with cantools),
`can_bus` adds python-can, and `load` aiomqtt. `cli` is the `fleet sim` entry point.
"""
