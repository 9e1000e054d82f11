"""Fine-tuning side: synthetic queries, hard negatives, training, model run_store."""
