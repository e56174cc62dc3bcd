"""workers.populations.combine: several sources stacked into one population."""

from __future__ import annotations

import numpy as np
import pytest

from workers.populations import SourceUtilities, combine_sources


def test_combine_sources_stacks_types_and_multiplies_weights():
    a = SourceUtilities(
        np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([0.25, 0.75]), ["x", "y"]
    )
    b = SourceUtilities(np.array([[5.0, 6.0]]), np.array([1.0]), ["x"])
    result = combine_sources([a, b], [3, 1], names=["judge", "csv"])
    np.testing.assert_array_equal(result.utilities, [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_allclose(result.weights, [0.1875, 0.5625, 0.25])
    assert result.weights.sum() == pytest.approx(1.0)
    assert result.type_labels == ["judge: x", "judge: y", "csv: x"]


def test_combine_sources_defaults_to_equal_source_weights():
    a = SourceUtilities(np.zeros((1, 3)), np.array([1.0]), ["a"])
    b = SourceUtilities(np.ones((3, 3)), np.ones(3) / 3, ["b", "c", "d"])
    np.testing.assert_allclose(
        combine_sources([a, b]).weights, [0.5, 1 / 6, 1 / 6, 1 / 6]
    )


def test_combine_sources_rejects_mismatched_parts():
    a = SourceUtilities(np.zeros((1, 3)), np.array([1.0]), ["a"])
    with pytest.raises(ValueError, match=r"parts\[1\]: has 2 responses"):
        combine_sources([a, SourceUtilities(np.zeros((1, 2)), np.array([1.0]), ["b"])])
    with pytest.raises(ValueError, match="pass names="):
        combine_sources([a, a])
    with pytest.raises(ValueError, match="^weights"):
        combine_sources([a, a], [1, -1], names=["p", "q"])
    with pytest.raises(ValueError, match="finite"):
        combine_sources([SourceUtilities(np.array([[np.nan]]), np.array([1.0]), ["n"])])
