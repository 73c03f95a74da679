"""The input language: schema, YAML loading with locations, overrides, semantic checks,
and the bundled scenarios (catalog/*.yaml)."""
