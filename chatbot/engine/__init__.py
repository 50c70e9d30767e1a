"""Everything that touches torch: loading a model, sampling, and the token-by-token decode loop.

This package knows nothing of SQL or Textual.
"""
