"""A live database brought under code: pgdump, converge, pull, baseline."""
