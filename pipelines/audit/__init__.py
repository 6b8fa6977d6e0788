"""The hash-chained prediction audit log: writing, verifying and replaying it."""
