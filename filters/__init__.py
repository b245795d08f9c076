"""Critics: score a batch of pairs, then decide by thresholds on stored scores (installed as distill.filters)."""
