"""distill: Impossible Distillation dataset factory."""
__version__ = "0.1.0"
