"""Graph surgery: editing helpers over onnx-ir."""

from modelport.surgery.editing import find_nodes, rename_value, set_batch_dim

__all__ = ["find_nodes", "rename_value", "set_batch_dim"]
