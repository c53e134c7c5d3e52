"""Hugging Face config classes for the checkpoints this plugin serves."""
