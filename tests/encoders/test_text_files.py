"""The text reader: real radiology reports, damaged bytes counted, blank and huge notes refused."""

from __future__ import annotations

import pandas as pd
import pytest

from encoders.readers.errors import ReaderError
from encoders.readers.text_files import inline_text, read_text
from tests.conftest import shared_file


@pytest.mark.realdata
def test_iu_xray_findings_round_trip_through_files(tmp_path):
    reports = pd.read_csv(shared_file("iu_xray_reports", "indiana_reports.csv"))
    findings = reports["findings"].dropna().iloc[:7].tolist()
    assert len(findings) == 7
    for i, finding in enumerate(findings):
        path = tmp_path / f"report_{i}.txt"
        path.write_text(finding, encoding="utf-8")
        document = read_text(path)
        assert document.text == finding
        assert document.replaced_bytes == 0


def test_latin1_bytes_are_replaced_one_by_one_and_counted(tmp_path):
    path = tmp_path / "note.txt"
    # "Fièvre 38°C, pas d'œdème" exported as Latin-1 (œ is not Latin-1, so it is left out).
    path.write_bytes("Fièvre 38°C, pas d'edème".encode("latin-1"))
    document = read_text(path)
    assert document.replaced_bytes == 3
    assert document.text == "Fi\ufffdvre 38\ufffdC, pas d'ed\ufffdme"


def test_truncated_multibyte_character_counts_each_byte(tmp_path):
    path = tmp_path / "note.txt"
    path.write_bytes(b"ok " + "€".encode()[:2] + b" end")
    document = read_text(path)
    assert document.replaced_bytes == 2
    assert document.text == "ok \ufffd\ufffd end"


def test_byte_order_mark_is_stripped_and_newlines_normalised(tmp_path):
    path = tmp_path / "note.txt"
    path.write_bytes(b"\xef\xbb\xbfLine one\r\nLine two\rLine three")
    document = read_text(path)
    assert document.text == "Line one\nLine two\nLine three"
    assert document.replaced_bytes == 0


@pytest.mark.parametrize("content", [b"", b"   \n\t\r\n", b"\xef\xbb\xbf  \n"])
def test_empty_or_blank_file_is_refused(tmp_path, content):
    path = tmp_path / "note.txt"
    path.write_bytes(content)
    with pytest.raises(ReaderError, match="empty or only whitespace") as caught:
        read_text(path)
    assert caught.value.path == str(path)


def test_file_over_max_bytes_is_refused_without_its_content(tmp_path):
    path = tmp_path / "note.txt"
    path.write_text("SECRET " * 20)
    assert read_text(path, max_bytes=140).text.startswith("SECRET")
    with pytest.raises(ReaderError, match="at most 139 bytes") as caught:
        read_text(path, max_bytes=139)
    assert "SECRET" not in str(caught.value)


def test_absent_file_is_refused(tmp_path):
    with pytest.raises(ReaderError, match="no such file"):
        read_text(tmp_path / "missing.txt")


def test_inline_cell_is_read_and_checked_like_a_file():
    document = inline_text("\ufeffNo acute disease.\r\nStable.")
    assert document.text == "No acute disease.\nStable."
    assert document.replaced_bytes == 0
    damaged = inline_text("bad \udce9 byte")
    assert damaged.text == "bad \ufffd byte" and damaged.replaced_bytes == 1
    with pytest.raises(ReaderError, match="empty or only whitespace"):
        inline_text("  \n ")
    with pytest.raises(ReaderError, match="at most 4 bytes"):
        inline_text("ééé", max_bytes=4)
    with pytest.raises(TypeError, match="float"):
        inline_text(float("nan"))
