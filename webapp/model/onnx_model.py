"""The learner's model exported to ONNX and served with ONNX Runtime, when it matches torch."""
import importlib.util
import os
import threading

from webapp.core.files import file_sha256
from webapp.model import registry
from webapp.model.classifier import Classifier

ONNX_FILE = "model.onnx"
TOLERANCE = 1e-4  # largest |probability difference| from the torch path that may be served


def export_onnx(learn, path, size):
    """Export the learner's model (eval mode, any batch size) to an ONNX file."""
    import torch

    model = learn.model.eval()
    dummy = torch.zeros(1, 3, size, size)
    torch.onnx.export(model, (dummy,), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})


def _new_session(path):
    """Open an ONNX Runtime session with this process's torch thread count, spinning off."""
    import onnxruntime as ort
    import torch

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


class OnnxClassifier(Classifier):
    """The same transforms as Classifier, with the model run by ONNX Runtime."""

    def __init__(self, learn, onnx_path, version=None):
        super().__init__(learn, version)
        self.onnx_path = str(onnx_path)
        self._session, self._pid = None, None
        self._lock = threading.Lock()  # gthread workers: the first requests may arrive together

    def _session_here(self):
        # ONNX Runtime's thread pool does not survive fork: one session per process, made
        # on first use (after gunicorn's post_fork has set this worker's thread count).
        if self._pid == os.getpid():
            return self._session
        with self._lock:
            if self._pid != os.getpid():
                self._session = _new_session(self.onnx_path)
                self._pid = os.getpid()
        return self._session

    def _forward(self, x):
        import torch

        session = self._session_here()
        out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        return torch.from_numpy(out)


def check_onnx(learn, onnx_path, images):
    """Return the largest |probability difference| between ONNX Runtime and torch on images."""
    import numpy as np

    torch_probs = Classifier(learn).probabilities(images)
    onnx_probs = OnnxClassifier(learn, onnx_path).probabilities(images)
    return float(np.abs(torch_probs - onnx_probs).max())


def classifier_for(data_dir, version, learn):
    """Return the classifier to serve a version with: ONNX Runtime if it passed its check."""
    info = registry.version_record(data_dir, version)["metrics"].get("onnx") or {}
    path = registry.models_dir(data_dir) / version / ONNX_FILE
    if info.get("serves") and path.is_file() and file_sha256(path) == info.get("sha256"):
        if importlib.util.find_spec("onnxruntime") is not None:
            return OnnxClassifier(learn, path, version)
    return Classifier(learn, version)
