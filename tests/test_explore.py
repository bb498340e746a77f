"""Notebook 00's comparison of the data with MURA's published counts."""
from __future__ import annotations

import pandas as pd
import pytest

from utils.chapters import explore
from utils.data import phantom


def test_mura_comparison_counts_studies_once_and_quotes_murass_table():
    idx = pd.DataFrame(dict(study_id=["a", "a", "b", "c", "d"], body_part=["HAND", "HAND", "HAND", "WRIST", "WRIST"],
                            label=[1, 1, 0, 0, 0], path=list("vwxyz")))
    t = explore.mura_comparison(idx)
    assert t.loc["HAND", "studies here"] == 2 and t.loc["WRIST", "studies here"] == 2  # views are not studies
    assert t.loc["HAND", "abnormal here %"] == 50.0 and t.loc["WRIST", "abnormal here %"] == 0.0
    normal, abnormal = phantom.MURA_STUDIES["WRIST"]
    assert t.loc["WRIST", "abnormal in MURA %"] == pytest.approx(round(100 * abnormal / (normal + abnormal), 1))
    total = sum(sum(v) for v in phantom.MURA_STUDIES.values())
    assert t.loc["HAND", "share in MURA %"] == pytest.approx(round(100 * sum(phantom.MURA_STUDIES["HAND"]) / total, 1))
