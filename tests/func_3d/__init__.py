"""Tests of func_3d/."""
