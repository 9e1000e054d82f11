"""Fine-tuning side: synthetic queries, hard negatives, training, publishing runs."""
