"""The throughput benchmark's cohort resizing (the benchmark itself is run by hand)."""

from __future__ import annotations

import pandas as pd
import yaml

from benchmarks.throughput import cycled_spec


def test_a_cycled_table_repeats_the_stays_with_new_unique_ids(tmp_path):
    pd.DataFrame(
        {"RecordID": ["132539", "132540", "132541"], "record_path": ["a.txt", "b.txt", "c.txt"]}
    ).to_csv(tmp_path / "cohort.csv", index=False)
    spec = tmp_path / "cohort.yaml"
    spec.write_text(yaml.safe_dump({"name": "p12", "table": "cohort.csv", "id": "RecordID"}))
    resized = cycled_spec(spec, 7)
    document = yaml.safe_load(resized.read_text())
    assert document["table"] == "cohort-7.csv" and document["name"] == "p12"
    table = pd.read_csv(tmp_path / document["table"], dtype=str)
    assert len(table) == 7 and table["RecordID"].is_unique
    assert table["record_path"].tolist() == ["a.txt", "b.txt", "c.txt", "a.txt", "b.txt", "c.txt", "a.txt"]
    assert table["RecordID"].iloc[3].endswith("132539")
