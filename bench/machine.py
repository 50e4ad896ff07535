"""What every benchmark reports of the machine it ran on: the CPU and how busy it was."""
import os
from pathlib import Path


def cpu_model():
    """Return the CPU's model name from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def loadavg():
    """Return the 1, 5 and 15 minute load averages as one string."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
