"""ablab's version and the protocol version that every run id includes."""

__version__ = "0.1.0"
PROTOCOL_VERSION = 3  # bump when a change alters the numbers a RunSpec produces (2: batch.accuracy of the recording step's batch;
# 3: λ ~ Beta(α, α) drawn in log space for α < 1, so tiny α no longer gives λ = 0.5; digits' normalize std is the
# population SD (ddof 0) like every loader's)
