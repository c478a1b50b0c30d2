"""The schema as canonical text: describe, fresh (throwaway builds from the migrations), snapshot, drift."""
