"""Evaluating fine-tuned policies against each other: the Compare page's library.

`compare` runs a comparison (the same prompts and sampling seeds for every policy, scored by the
training reward model and an optional held-out judge, with the KL from the base policy) and
loads it back as a tidy frame; `stats` turns that frame into intervals, paired win rates,
slices and a Pareto front of the policies; `report` writes all of it as one self-contained
HTML file. Modules are imported by name; this package imports nothing at import time.
"""
