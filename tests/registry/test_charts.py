"""The report page's per-check chart: its marks sit where the numbers say."""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET

from registry.charts import check_chart

NS = "{http://www.w3.org/2000/svg}"


def _bars(svg: str) -> tuple[float, list[float]]:
    root = ET.fromstring(svg)
    bar = root.findall(f"{NS}rect")[1]
    lines = [float(line.get("x1")) for line in root.findall(f"{NS}line")]
    return float(bar.get("width")), lines


def test_a_strong_check_passes_both_marks():
    svg = check_chart(-77.0, 5e-7, 80, "uchida on digits")
    width, (holm, floor) = _bars(svg)
    assert 8 + width > floor > holm  # the bar reaches past the forgery floor (24.1)
    assert "#0b6e3b" in svg and "−log10 p = 77.0" in svg


def test_a_significant_but_forgeable_check_stops_between_the_marks():
    svg = check_chart(-10.0, 5e-7, 80, "lsb")
    width, (holm, floor) = _bars(svg)
    assert holm < 8 + width < floor
    assert "#a4161a" in svg  # significant, yet cheap to forge: drawn as a warning


def test_an_infinite_p_value_is_drawn_to_the_edge_and_a_check_that_did_not_run_has_no_chart():
    svg = check_chart(-math.inf, 1e-6, 80, "x")
    assert "≥ 10⁶" in svg
    assert check_chart(None, None, 80, "x") == ""


def test_labels_are_escaped():
    assert "<script>" not in check_chart(-5.0, 1e-6, 80, "<script>alert(1)</script>")
