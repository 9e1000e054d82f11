"""Gradio chat UI over the hybrid retriever, with a baseline / fine-tuned toggle."""
