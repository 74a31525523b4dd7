"""Pre-training science pipeline: all logic behind the Snakemake workflow (importable, tested)."""
