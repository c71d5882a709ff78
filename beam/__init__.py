"""Beam jobs: preprocessing (`python -m beam.preprocess`)."""
