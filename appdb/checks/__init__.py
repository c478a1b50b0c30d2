"""What a deploy must guarantee, read from the live catalog: catalog (the queries), verify, inspect."""
