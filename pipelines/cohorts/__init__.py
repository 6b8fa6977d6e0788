"""Cohorts: the spec file, the cohort table, validation, the decoded-file cache, the dataset and collation,
and the preprocessing fitted on a training split."""
