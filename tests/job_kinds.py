"""Job runners for the job-mechanism tests: count, fail, wait for cancel, ignore it, die."""
import io
import os
import signal
import time

from PIL import Image

from webapp.dataset.store import Dataset


def count(job):
    """Count to params['n'], recording each number as an item."""
    n = job.params["n"]
    job.progress(0, n, phase="counting")
    for i in range(1, n + 1):
        job.item(f"item {i}", "stored" if i % 2 else "duplicate", detail=f"number {i}")
        job.progress(i, n, detail={"last": i})
    return {"counted": n, "message": f"Counted to {n}."}


def fail(job):
    """Fail with a clear message."""
    job.progress(1, 3, phase="working")
    raise RuntimeError("the data was not there")


def wait_cancel(job):
    """Report progress until cancelled (at most 60 s)."""
    job.progress(0, 600, phase="waiting")
    for i in range(600):
        time.sleep(0.1)
        job.progress(i)
    return {}


def die(job):
    """Get killed the way the out-of-memory killer does it."""
    job.progress(1, 2, phase="working")
    job.log("about to be killed")
    os.kill(os.getpid(), signal.SIGKILL)


def ignore_cancel(job):
    """Sleep for params['seconds'] (60) without a progress call, like a fetch that never ends."""
    job.progress(0, 1, phase="stuck")
    for _ in range(int(job.params.get("seconds", 60) * 10)):
        time.sleep(0.1)
    job.progress(1)
    return {}


def deaf(job):
    """Store one labeled image, then hang deaf to cancel and to SIGTERM alike (60 s at most)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    dataset = Dataset.from_config({**job.params["store"], "DATA_DIR": job.data_dir})
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(buf, "PNG")
    added = dataset.add_image(buf.getvalue(), label="cats", name="cat.png", write_csv=False)
    dataset.close()
    job.item("cat.png", added.status, image_id=added.image_id)
    job.progress(1, 2, phase="stuck")
    time.sleep(60)
    return {}
