"""Tests of medseg/eval/."""
