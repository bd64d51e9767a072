"""The offline tree viewer: one self-contained HTML page per run or tree."""
