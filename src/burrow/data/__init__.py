"""Text in: corpus readers, cleaning, tokenizers and the flat token store."""
