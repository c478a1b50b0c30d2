"""Clusters the project owns: cluster (appdb local up/down/url/reset) and the Supabase shape."""
