"""Worked examples that use edgemm like any user model would: files in, `edgemm` commands and library calls.

They run from the repository root (`python -m examples.<name> ...`) and are not installed with edgemm.
"""
