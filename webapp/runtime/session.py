"""An ONNX Runtime session over the exported model, giving probabilities without torch."""
import numpy as np
import onnxruntime as ort


def softmax(logits):
    """Return the softmax over the last axis, shifted by the maximum so exp cannot overflow."""
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


class Session:
    """One ONNX Runtime session: threads fixed, spinning off so idle workers leave the CPU."""

    def __init__(self, onnx_path, threads=1):
        """threads: intra-op threads; 0 lets ONNX Runtime use every core (one-off work)."""
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or 0)
        opts.inter_op_num_threads = 1
        # A spinning pool burns a core between requests; a web worker mostly waits.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(onnx_path), opts,
                                             providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def logits(self, batch):
        """Return the model's raw outputs for an (n, 3, h, w) float32 batch."""
        return self._session.run(None, {self._input: batch.astype(np.float32, copy=False)})[0]

    def probabilities(self, batch):
        """Return (n, classes) probabilities: export_onnx leaves the loss's softmax out."""
        return softmax(self.logits(batch))
