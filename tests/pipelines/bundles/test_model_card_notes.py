from pipelines.bundles.model_card import open_gates_note, teacher_note, tree_evidence_note


def test_open_gates_note_names_each_open_modality_with_its_mean_weight() -> None:
    assert open_gates_note({}) is None
    assert open_gates_note({"open_modalities": {}}) is None
    note = open_gates_note({"open_modalities": {"static": 0.9981, "series": 0.9994}})
    assert note is not None
    assert "`static`, `series`" in note and "0.998 and 0.999" in note
    assert "do not rank the features" in note


def _trees(weight: float) -> dict:
    return {
        "tree_evidence": {
            "weight": weight,
            "trees": 1200,
            "folds": 5,
            "features": 300,
            "val_log_loss": 0.2871,
            "val_log_loss_without": 0.2934,
            "network_alone": {"val": {"auroc": 0.857}, "test": {"auroc": 0.85}},
        },
        "teacher": {"features": 300, "folds": 5, "cross_fitted_train_auroc": 0.84},
    }


def test_tree_evidence_note_gives_the_weight_the_log_loss_it_bought_and_the_network_alone() -> None:
    assert tree_evidence_note({}) is None
    note = tree_evidence_note(_trees(0.7))
    assert note is not None
    assert "1200 trees (5 folds) are part of the model" in note and "weighted 0.7" in note
    assert "0.2871, against 0.2934 without them" in note
    assert "the network alone: validation AUROC 0.857, test AUROC 0.850" in note
    assert "trees stay in the model" in teacher_note(_trees(0.7))
    unused = tree_evidence_note(_trees(0.0))
    assert unused is not None and "weight is 0 and the network alone predicts" in unused
