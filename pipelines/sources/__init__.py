"""Where cohorts come from: importers of public datasets and clinical databases, and synthetic cohorts."""
