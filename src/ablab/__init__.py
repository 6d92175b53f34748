"""ablab: a laboratory for controlled ablation studies of deep-learning training."""

__version__ = "0.1.0"
PROTOCOL_VERSION = 2  # bump when a change alters the numbers a RunSpec produces (2: batch.accuracy of the recording step's batch)


def load(path):
    """Open a study directory to read (never changing a file): ``ablab.load("results/x").metrics()``."""
    from ablab.store import Store

    return Store.open(path, readonly=True)
