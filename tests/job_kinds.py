"""Job runners for the job-mechanism tests: count, fail, wait for cancel, die."""
import os
import signal
import time


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
