"""ablab's version and the protocol version that every run id includes."""

__version__ = "0.1.0"
PROTOCOL_VERSION = 2  # bump when a change alters the numbers a RunSpec produces (2: batch.accuracy of the recording step's batch)
