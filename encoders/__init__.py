"""Modality readers (file -> array) and encoders (array -> tokens), one file per modality kind."""
