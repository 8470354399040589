"""Compatibility certificates.

Data flows one way: run records -> :mod:`evaluate` (a level computed from the
records against a :mod:`profile`) -> :mod:`statement` (an in-toto Statement v1)
-> :mod:`dsse` (a signed envelope, Ed25519 keys from :mod:`keys`) -> a
certificate file, its bilingual :mod:`page`, a :mod:`publish`\\ ed registry and a
signed :mod:`revocation` list. :mod:`verify` checks all of it offline.

Criteria are judged by the registered classes of :mod:`measures`; every signed
document is checked against its JSON schema (:mod:`schema`, :mod:`predicate`) before
use; :mod:`sections` says which table a suite's records go to; :mod:`provenance` says
where the evidence was made.
"""
