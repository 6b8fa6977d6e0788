from pipelines.bundles.model_card import open_gates_note


def test_open_gates_note_names_each_open_modality_with_its_mean_weight() -> None:
    assert open_gates_note({}) is None
    assert open_gates_note({"open_modalities": {}}) is None
    note = open_gates_note({"open_modalities": {"static": 0.9981, "series": 0.9994}})
    assert note is not None
    assert "`static`, `series`" in note and "0.998 and 0.999" in note
    assert "do not rank the features" in note
