"""Pipeline stages: callable classes that map a batch to a batch (installed as distill.stages)."""
