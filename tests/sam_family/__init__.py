"""Tests of sam_family/."""
