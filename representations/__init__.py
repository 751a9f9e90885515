"""Canonical forms of a video (CoDeF, layered atlas, portrait) and the encodings they share."""
