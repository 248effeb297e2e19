"""Preference data: the canonical schema, loaders, format presets, validation, conversions and
the built-in demo data generator."""
