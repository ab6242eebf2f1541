"""Offline batch inference: a model or repository over a folder of images, .npy/.npz files or parquet.

Why: scoring a dataset should give what the server would answer, without a server. The work is
done by :class:`BatchPredictor` — the server's model load and pipeline stages around one ONNX
Runtime session — driven by a local loop, or by Ray Data's ``map_batches`` when one machine is not
enough. ``inputs`` reads the samples, ``outputs`` writes parquet atomically, ``infer`` runs the job::

    from modelport.batch import batch_infer, read_results
    batch_infer("models/", "images/", "scores/", model="classify")            # local
    batch_infer("models/", "images/", "scores/", model="classify", use_ray=True, force=True)
    read_results("scores/")["labels"]
"""

from modelport.batch.infer import BatchPredictor, BatchResult, batch_infer, select_model
from modelport.batch.inputs import BatchInput, find_inputs
from modelport.batch.outputs import read_results

__all__ = ["BatchInput", "BatchPredictor", "BatchResult", "batch_infer", "find_inputs", "read_results", "select_model"]
