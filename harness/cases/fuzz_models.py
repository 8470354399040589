"""A corpus of bad model files for the path a user's own model takes (``--model``).

:func:`write_corpus` writes one file per kind (and, with ``count``, extra random and
truncated files from a seeded generator) into a folder, plus a ``secret`` file
*outside* that folder whose bytes external-data references try to reach. Every
file must end in one clear record: a refusal, an error or a skip, never a
traceback, a hang or a lost record, and external data is never read from outside
the model's folder.

    python -m harness.cases.fuzz_models OUT_DIR [--count N] [--seed S]
"""

from __future__ import annotations

import argparse
import os
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: bytes an external-data reference that escaped the model folder would read
SECRET = b"SHIPEI-FUZZ-SECRET-" * 16
Writer = Callable[[Path, random.Random], None]


def _graph(nodes: list[onnx.NodeProto], inputs: list[str], outputs: list[str],
           initializers: list[TensorProto] | None = None, shape: list[int] | None = None,
           name: str = "fuzz") -> onnx.GraphProto:
    dims = shape if shape is not None else [2, 3]
    return helper.make_graph(
        nodes, name, [helper.make_tensor_value_info(i, TensorProto.FLOAT, dims) for i in inputs],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, dims) for o in outputs],
        initializer=initializers or [])


def _model(graph: onnx.GraphProto, opset: int = 17, domain: str = "") -> onnx.ModelProto:
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(domain, opset)],
                             ir_version=8)


def valid_model() -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")
    return _model(_graph([helper.make_node("Add", ["x", "w"], ["y"])], ["x"], ["y"], [weight]))


def _save(path: Path, model: onnx.ModelProto) -> None:
    path.write_bytes(model.SerializeToString())


def _external(location: str) -> onnx.ModelProto:
    """A valid model whose initializer claims to live in external file ``location``."""
    model = valid_model()
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "24")):
        weight.external_data.add(key=key, value=value)
    return model


def _truncated(path: Path, rng: random.Random) -> None:
    data = valid_model().SerializeToString()
    path.write_bytes(data[: rng.randrange(1, len(data) - 1)])


def _random_bytes(path: Path, rng: random.Random) -> None:
    path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))))


def _symlink_out(path: Path, rng: random.Random) -> None:
    link = path.with_name("weights_link.bin")
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(path.parent.parent / "secret", link)
    _save(path, _external(link.name))


KINDS: dict[str, Writer] = {
    "empty": lambda p, r: p.write_bytes(b""),
    "truncated": _truncated,
    "random_bytes": _random_bytes,
    "text_not_onnx": lambda p, r: p.write_text("ir_version: 8\nthis is not a protobuf\n"),
    "opset_999": lambda p, r: _save(p, _model(valid_model().graph, opset=999)),
    "opset_0": lambda p, r: _save(p, _model(valid_model().graph, opset=0)),
    "unknown_domain": lambda p, r: _save(p, _model(_graph(
        [helper.make_node("Frobnicate", ["x"], ["y"], domain="com.nowhere")], ["x"], ["y"]),
        domain="com.nowhere", opset=1)),
    "no_outputs": lambda p, r: _save(p, _model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "fuzz",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])], []))),
    "cycle": lambda p, r: _save(p, _model(_graph(
        [helper.make_node("Add", ["x", "b"], ["a"]), helper.make_node("Relu", ["a"], ["b"])],
        ["x"], ["a"]))),
    "missing_initializer": lambda p, r: _save(p, _model(_graph(
        [helper.make_node("Add", ["x", "nowhere"], ["y"])], ["x"], ["y"]))),
    "absurd_shape": lambda p, r: _save(p, _model(_graph(
        [helper.make_node("Relu", ["x"], ["y"])], ["x"], ["y"], shape=[10**6, 10**6, 10**6]))),
    "negative_shape": lambda p, r: _save(p, _model(_graph(
        [helper.make_node("Relu", ["x"], ["y"])], ["x"], ["y"], shape=[-5, 3]))),
    "external_parent_traversal": lambda p, r: _save(p, _external("../secret")),
    "external_etc_passwd": lambda p, r: _save(p, _external("../../../../../../etc/passwd")),
    "external_absolute": lambda p, r: _save(p, _external(str(p.parent.parent / "secret"))),
    "external_symlink_out": _symlink_out,
    "external_missing": lambda p, r: _save(p, _external("no_such_weights.bin")),
}
#: the kinds that try to read outside the model's folder: they must be refused
TRAVERSAL_KINDS = ("external_parent_traversal", "external_etc_passwd", "external_absolute",
                   "external_symlink_out")


def write_corpus(folder: Path, count: int = 0, seed: int = 20261202) -> list[Path]:
    """One model file per kind in ``folder/models``, then ``count`` random/truncated
    extras; the secret lies in ``folder/secret``, outside the models' folder."""
    models = folder / "models"
    models.mkdir(parents=True, exist_ok=True)
    (folder / "secret").write_bytes(SECRET)
    rng = random.Random(seed)
    paths = []
    for kind, writer in KINDS.items():
        path = models / f"fuzz_{kind}.onnx"
        writer(path, rng)
        paths.append(path)
    for index in range(count):
        kind = rng.choice(("truncated", "random_bytes"))
        path = models / f"fuzz_extra_{index:03d}_{kind}.onnx"
        KINDS[kind](path, rng)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="write the bad-model fuzz corpus")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=0, help="extra random/truncated files")
    parser.add_argument("--seed", type=int, default=20261202)
    args = parser.parse_args(argv)
    for path in write_corpus(args.folder, args.count, args.seed):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
