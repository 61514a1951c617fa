"""Token sources: inference servers' own metrics pages, read through server profiles."""
