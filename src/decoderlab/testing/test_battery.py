"""The conformance battery as pytest tests, parametrized over every registered component (plugins included).

Run it for your own plugin with ``python -m decoderlab.testing --plugins DIR`` (see :mod:`decoderlab.testing`).
"""

from __future__ import annotations

import pytest

from decoderlab.testing.battery import CHECKS, all_cases, check_compile, check_fullgraph, compile_cases

CASES = all_cases()
COMPILE = compile_cases()


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__.removeprefix("check_") for c in CHECKS])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_component(case, check) -> None:
    check(case)


@pytest.mark.slow
@pytest.mark.parametrize("case", COMPILE, ids=[c.id for c in COMPILE])
def test_compile(case) -> None:
    check_compile(case)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fullgraph(case) -> None:
    check_fullgraph(case)
