"""The training core: the engine, optimisers, losses, checkpoints and weights, devices and processes, loggers."""
