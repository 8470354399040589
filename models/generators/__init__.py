"""Deterministic generators of the zoo's synthetic models (``onnx.helper``, fixed seeds).

Each public ``build()`` returns an :class:`onnx.ModelProto` whose serialized bytes
are pinned by sha256 in the model's manifest; a changed generator (or a numpy
whose random stream changed) is caught by that hash, never run silently.
"""
