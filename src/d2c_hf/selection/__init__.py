"""Select: the difficulty score (the scorer, its estimator and reliability), the selection strategies and
training a scorer from scratch.
"""
