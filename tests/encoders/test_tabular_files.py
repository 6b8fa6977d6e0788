"""Tabular preprocessing: training statistics only, explicit missingness, a lossless saved state."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from encoders.readers.tabular_files import TabularPreprocessor
from tests.conftest import shared_file

NUMERIC = [
    "age",
    "creatine_phosphokinase",
    "ejection_fraction",
    "platelets",
    "serum_creatinine",
    "serum_sodium",
]
CATEGORICAL = ["anaemia", "diabetes", "high_blood_pressure", "sex", "smoking"]


@pytest.fixture
def heart_failure() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The real heart-failure records, split 200 train / 99 test in file order."""
    frame = pd.read_csv(shared_file("heart_failure", "heart_failure_clinical_records_dataset.csv"))
    return frame.iloc[:200].reset_index(drop=True), frame.iloc[200:].reset_index(drop=True)


@pytest.mark.realdata
def test_training_rows_are_standardised_and_ranges_kept(heart_failure):
    train, test = heart_failure
    prep = TabularPreprocessor(NUMERIC, CATEGORICAL).fit(train)
    arrays = prep.transform(train)
    assert arrays.numeric.shape == (200, 6) and arrays.numeric.dtype == np.float32
    assert arrays.categorical.shape == (200, 5) and arrays.categorical.dtype == np.int64
    assert arrays.names == (*NUMERIC, *CATEGORICAL)
    np.testing.assert_allclose(arrays.numeric.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(arrays.numeric.std(axis=0), 1.0, atol=1e-5)
    assert not arrays.numeric_missing.any()
    np.testing.assert_array_equal(prep.min_, train[NUMERIC].min().to_numpy())
    np.testing.assert_array_equal(prep.max_, train[NUMERIC].max().to_numpy())
    # Test rows use the training statistics, so their mean is not re-centred to 0.
    test_mean = prep.transform(test).numeric[:, NUMERIC.index("age")].mean()
    expected = (test["age"].mean() - train["age"].mean()) / train["age"].std(ddof=0)
    assert test_mean == pytest.approx(expected, rel=1e-4)
    assert prep.vocabularies_["sex"] == ("0", "1")
    np.testing.assert_array_equal(
        arrays.categorical[:, CATEGORICAL.index("sex")], train["sex"].to_numpy() + 2
    )


@pytest.mark.realdata
def test_unseen_category_is_one_and_missing_is_zero_with_a_flag(heart_failure):
    train, test = heart_failure
    prep = TabularPreprocessor(NUMERIC, CATEGORICAL).fit(train)
    test = test.astype({"sex": object, "platelets": object})
    test.loc[0, "sex"] = 7
    test.loc[1, "sex"] = None
    test.loc[2, "sex"] = " "
    test.loc[3, "platelets"] = np.nan
    test.loc[4, "platelets"] = ""
    arrays = prep.transform(test)
    sex = arrays.categorical[:, CATEGORICAL.index("sex")]
    assert sex[:3].tolist() == [1, 0, 0]
    assert set(sex[3:].tolist()) <= {2, 3}
    column = NUMERIC.index("platelets")
    assert arrays.numeric_missing[:, column].tolist()[:6] == [
        False,
        False,
        False,
        True,
        True,
        False,
    ]
    assert arrays.numeric[3, column] == 0.0 and arrays.numeric[4, column] == 0.0
    assert arrays.numeric_missing.sum() == 2


@pytest.mark.realdata
def test_saved_state_round_trips_through_json_to_identical_transforms(heart_failure):
    train, test = heart_failure
    prep = TabularPreprocessor(NUMERIC, CATEGORICAL, min_category_count=2).fit(train)
    restored = TabularPreprocessor.from_dict(json.loads(json.dumps(prep.to_dict())))
    before, after = prep.transform(test), restored.transform(test)
    np.testing.assert_array_equal(before.numeric, after.numeric)
    np.testing.assert_array_equal(before.numeric_missing, after.numeric_missing)
    np.testing.assert_array_equal(before.categorical, after.categorical)
    assert before.names == after.names
    assert restored.to_dict() == prep.to_dict()


def test_rare_categories_fall_below_min_count_into_unknown():
    frame = pd.DataFrame({"icu": ["MICU", "SICU", "MICU", "CCU", "MICU", "SICU"]})
    prep = TabularPreprocessor([], ["icu"], min_category_count=2).fit(frame)
    assert prep.vocabularies_["icu"] == ("MICU", "SICU")
    codes = prep.transform(frame).categorical[:, 0]
    assert codes.tolist() == [2, 3, 2, 1, 2, 3]
    assert prep.to_dict()["categorical"][0]["counts"] == {"CCU": 1, "MICU": 3, "SICU": 2}


def test_integer_categories_match_after_a_missing_cell_turns_them_into_floats():
    train = pd.DataFrame({"stage": [1, 2, 3, 2]})
    test = pd.DataFrame({"stage": [3.0, np.nan, 2.0, 4.0]})
    prep = TabularPreprocessor([], ["stage"]).fit(train)
    assert prep.transform(test).categorical[:, 0].tolist() == [4, 0, 3, 1]
    # Text is never read as a number: codes such as "01" and "1" must stay distinct categories.
    assert prep.transform(pd.DataFrame({"stage": ["3.0", "3"]})).categorical[:, 0].tolist() == [
        1,
        4,
    ]


def test_constant_and_all_missing_columns_do_not_divide_by_zero():
    train = pd.DataFrame({"flat": [5.0, 5.0, 5.0], "empty": [np.nan, np.nan, np.nan]})
    prep = TabularPreprocessor(["flat", "empty"], []).fit(train)
    arrays = prep.transform(pd.DataFrame({"flat": [5.0, 7.0], "empty": [1.0, np.nan]}))
    assert arrays.numeric.tolist() == [[0.0, 1.0], [2.0, 0.0]]
    assert arrays.numeric_missing.tolist() == [[False, False], [False, True]]
    state = prep.to_dict()["numeric"]
    assert state[0]["std"] == 1.0 and state[1]["min"] is None and state[1]["max"] is None


def test_text_in_a_numeric_column_names_row_column_and_type_not_the_value():
    prep = TabularPreprocessor(["lactate"], []).fit(pd.DataFrame({"lactate": [1.0, 2.0]}))
    bad = pd.DataFrame({"lactate": [1.5, "", "high-SECRET"]})
    with pytest.raises(ValueError, match=r"row 3, column 'lactate'.*type str") as caught:
        prep.transform(bad)
    assert "SECRET" not in str(caught.value)
    with pytest.raises(ValueError, match=r"row 2, column 'lactate'"):
        prep.transform(pd.DataFrame({"lactate": [1.0, np.inf]}))


def test_transform_before_fit_and_absent_columns_are_clear_errors():
    prep = TabularPreprocessor(["age"], ["sex"])
    with pytest.raises(RuntimeError, match="not fitted"):
        prep.transform(pd.DataFrame({"age": [1.0], "sex": ["F"]}))
    with pytest.raises(ValueError, match=r"\['sex'\] are not in the table"):
        prep.fit(pd.DataFrame({"age": [1.0]}))
    with pytest.raises(ValueError, match="no rows"):
        prep.fit(pd.DataFrame({"age": [], "sex": []}))
