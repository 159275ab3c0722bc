"""The training core: the engine, optimisers, losses, checkpoints and weights, devices and processes, loggers,
and the segmentation-model bases the model families share (:mod:`medseg.train.segmenter`)."""
