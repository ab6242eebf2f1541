"""Graph surgery over onnx-ir: editing helpers, sub-model extraction, input shapes, opset conversion."""

from modelport.surgery.editing import (
    add_outputs,
    cleanup,
    describe_node,
    find_chains,
    find_node,
    find_nodes,
    find_value,
    insert_after,
    remove_node,
    rename_value,
    replace_node,
    set_attribute,
    set_batch_dim,
    toposort,
)
from modelport.surgery.extract import extract
from modelport.surgery.opset import convert_opset
from modelport.surgery.shapes import (
    infer_shapes,
    make_dim_dynamic,
    set_batch,
    set_input_shape,
    set_input_shapes,
)

__all__ = [
    "add_outputs",
    "cleanup",
    "convert_opset",
    "describe_node",
    "extract",
    "find_chains",
    "find_node",
    "find_nodes",
    "find_value",
    "infer_shapes",
    "insert_after",
    "make_dim_dynamic",
    "remove_node",
    "rename_value",
    "replace_node",
    "set_attribute",
    "set_batch",
    "set_batch_dim",
    "set_input_shape",
    "set_input_shapes",
    "toposort",
]
