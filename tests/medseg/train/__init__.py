"""Tests of medseg/train/."""
