"""The training engine: ``train(RunSpec) -> RunResult``."""
