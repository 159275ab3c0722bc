"""Baselines (ResNet, UNet, YOLO) trained and scored on the same medseg datasets, losses and metrics.

Every torch baseline is a :class:`medseg.train.segmenter.ObjectSegmenter` (per-object logits ``[N,S,S]``
from an ``ImageBatch``-like object); the semantic ones (:class:`medseg.train.segmenter.SemanticSegmenter`)
predict one sigmoid channel per foreground class. The bases live in ``medseg`` because the SAM family's
frozen-encoder model shares them.

Submodules are imported on use (``traditional_models.yolo`` needs the optional ``ultralytics``).
"""
