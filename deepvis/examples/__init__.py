"""Runnable examples: ``python -m deepvis.examples.digits`` records a training run offline."""
