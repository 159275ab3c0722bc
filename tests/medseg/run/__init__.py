"""Tests of medseg/run/."""
