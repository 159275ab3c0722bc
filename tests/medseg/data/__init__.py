"""Tests of medseg/data/."""
