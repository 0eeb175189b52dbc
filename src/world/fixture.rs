//! Fixture worlds: one YAML file, one case (placeholder, being written).
