"""Worked example of ``trustlab refusal-index --from-samples`` (two lm-evaluation-harness sample files)."""
