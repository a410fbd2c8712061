"""Boot control: A/B slot state per boot chain (pure; the node imports it)."""
