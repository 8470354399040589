"""Judging: outputs against references, the elements no verdict may rest on, known-failure
expectations, and charging a crash to the case that caused it.
"""
