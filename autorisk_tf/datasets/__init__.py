"""Builders of event and label tables from public real-data files (CDNOW, Online Retail).

Each module reads the file as published (kept outside this repository, in `../shared/data`),
writes an event table that `beam.preprocess` reads with the matching schema in
`autorisk_tf/schemas/`, and a label table for the dataset's downstream tasks.
"""
