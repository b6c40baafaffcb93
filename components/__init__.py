"""One module per pipeline stage, plus the small shared modules they use."""
