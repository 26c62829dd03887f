"""`nutq train draft`: distil a small T3-shaped draft (engine.draft.DraftT3) for speculative decoding."""
