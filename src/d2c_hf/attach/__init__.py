"""Attach: the per-row parts stored next to each kept image (latents, visual tokens) and the class text, and
training a small vision encoder.
"""
