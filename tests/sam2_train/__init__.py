"""Tests of sam2_train/."""
