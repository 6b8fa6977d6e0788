"""The README's notebook example runs as written, from making a cohort to an explanation."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def notebook_example() -> str:
    """The first Python block under the README's heading "In a notebook"."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## In a notebook") :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "the README's notebook section has no python block"
    return match.group(1)


@pytest.mark.slow
def test_the_readme_notebook_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(notebook_example(), str(README), "exec"), namespace)
    bundle, cohort = namespace["bundle"], namespace["cohort"]
    risks, labels = namespace["risks"], namespace["labels"]
    assert list(risks.index) == cohort.ids == list(labels.index)
    np.testing.assert_allclose(risks.sum(axis=1), 1.0, atol=1e-6)
    assert set(labels) <= set(bundle.classes)
    assert 0.0 <= namespace["evaluation"].auroc.estimate <= 1.0
    explanation = namespace["explanation"]
    assert explanation.prediction.patient_id == "SYN-00004"
    assert set(explanation.shapley) == {"labs", "vitals", "cxr"}
    assert (tmp_path / "model" / "manifest.json").is_file()
    assert "AUROC" in printed.getvalue()
