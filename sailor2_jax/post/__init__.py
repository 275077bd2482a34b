"""Post-training helpers: the chat format (SFT, DPO and generation share it)."""
