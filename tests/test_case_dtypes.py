"""Which element types a model makes a target take: the tensors that cross the
boundary, not the constants an old IR version lists among the graph's inputs."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from harness.cases.case import unsupported_reason
from harness.driver.target import Capabilities

FLOAT_ONLY = Capabilities(dtypes=("float32",))


def _reshape_model(shape_is_constant: bool):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    shape = helper.make_tensor_value_info("shape", TensorProto.INT64, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])
    initializers = [numpy_helper.from_array(np.array([3, 2], np.int64), "shape")]
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "g",
                              [x, shape], [y],
                              initializer=initializers if shape_is_constant else [])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_an_input_with_an_initializer_is_a_constant_and_its_type_is_not_asked_for():
    # the onnx wheel's "light" CNNs list their int64 ConstantOfShape shapes this way
    assert unsupported_reason(_reshape_model(shape_is_constant=True), FLOAT_ONLY) is None


def test_a_fed_input_of_an_undeclared_type_is_a_capability_skip():
    reason = unsupported_reason(_reshape_model(shape_is_constant=False), FLOAT_ONLY)
    assert reason == "dtype(s) int64 not declared by the target"


def test_vendor_converters_get_only_the_inputs_that_are_fed():
    import onnx

    from targets.sdk_target import with_static_shapes

    model = _reshape_model(shape_is_constant=True)
    model.ir_version = 3  # weights listed among the inputs, as the light CNNs have them
    static = onnx.load_from_string(with_static_shapes(
        model.SerializeToString(), {"x": np.zeros((2, 3), np.float32)}))
    assert [value.name for value in static.graph.input] == ["x"]
    assert [t.name for t in static.graph.initializer] == ["shape"]
    assert static.ir_version >= 4
    onnx.checker.check_model(static)
