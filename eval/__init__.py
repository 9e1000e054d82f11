"""Evaluation harness: retrieval and answer-level evaluation, reports and the demo."""
