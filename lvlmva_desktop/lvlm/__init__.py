"""LVLM back-ends (local transformers folders, OpenAI-compatible endpoints), prompts and parsing."""
