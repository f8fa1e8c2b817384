"""Vehicle front-ends: OBD-II (python-obd), CAN (python-can + cantools) and GPS (NMEA 0183).

Each source runs its blocking device I/O on its own thread, writes decoded values into the
shared `sampler.Board`, and reports its state and counters through a `SourceHealth`. A source
never raises out of its thread: device errors lead to a reconnect with exponential back-off.
"""
