"""Edge gateway: reads OBD-II, CAN and GPS in a vehicle and publishes over MQTT.

This package is the dependency-light base of the project: the wire contract
(`core.protocol`) lives here because a Raspberry Pi installs only this package's
extra, and every other part imports the contract from here.
"""

__version__ = "0.1.0"
