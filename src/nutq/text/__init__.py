"""Text: the Arabic frontend and the multilingual tokenizer (pure Python leaves)."""
