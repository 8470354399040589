"""Compatibility certificates.

Data flows one way: run records -> :mod:`evaluate` (a level computed from the
records against a :mod:`profile`) -> :mod:`statement` (an in-toto Statement v1)
-> :mod:`dsse` (a signed envelope, Ed25519 keys from :mod:`keys`) -> a
certificate file, its bilingual :mod:`page`, a :mod:`publish`\\ ed registry and a
signed :mod:`revocation` list. :mod:`verify` checks all of it offline.
"""
