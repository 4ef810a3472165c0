"""The suite's own settings: CI replays the same Hypothesis examples and shows why tests skipped."""

from __future__ import annotations

import pytest
from hypothesis import settings

from tests.conftest import hypothesis_profile


def test_ci_derandomises_hypothesis() -> None:
    assert hypothesis_profile({"CI": "true"}) == hypothesis_profile({"CI": "1"}) == "ci"
    assert hypothesis_profile({}) == hypothesis_profile({"CI": "false"}) == "default"
    assert hypothesis_profile({"CI": "true", "MUTANT_UNDER_TEST": "geopix.plan.x_ramp__mutmut_1"}) == "mutation"
    ci = settings.get_profile("ci")
    assert ci.derandomize and ci.database is None
    assert not settings.get_profile("default").derandomize  # locally Hypothesis still explores


def test_skip_reasons_are_reported(pytestconfig: pytest.Config) -> None:
    """``python -m pytest -q`` (the README's command) lists every skip with its reason (pyproject's addopts)."""
    assert "-rs" in pytestconfig.getini("addopts")
