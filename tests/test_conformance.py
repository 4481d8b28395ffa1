"""Runs the conformance battery (:mod:`decoderlab.testing`) over every registered component, plugins included."""

from decoderlab.testing.test_battery import test_compile, test_component

__all__ = ["test_compile", "test_component"]
