"""Evaluation harness: IR metrics, paired significance tests and BEIR-layout datasets."""
