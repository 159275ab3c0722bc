"""SAM (v1) and MedSAM ViT models for training, from Meta's ``segment-anything`` package (PyPI).

The family plugs into the shared engine the way SAM2 does (``sam2_train`` + ``func_2d``):

- :mod:`sam_family.build`: any ViT variant at any image size (multiple of 16) from
  ``segment_anything.sam_model_registry``; Meta's ``pos_embed`` and global-attention ``rel_pos`` are
  interpolated to the chosen size when weights are loaded.
- :mod:`sam_family.checkpoint`: strict, ``weights_only`` loading (Meta's raw state dicts, MedSAM's file,
  our ``checkpoint_*.pth``), through :func:`medseg.train.checkpoint.read_checkpoint`.
- :mod:`sam_family.preprocess`: the model's own input normalisation (SAM mean/std, MedSAM min-max).
- :mod:`sam_family.model`: :class:`SamNet`, the encoder / prompt encoder / decoder with gradients.
- :mod:`sam_family.task`: the 2D task for the shared engine (box / click / no prompt, multimask + IoU).
- :mod:`sam_family.frozen_encoder`: frozen SAM ViT-B or ResNet-50 encoder + a small trained decoder.
"""
