"""Resource requests of a worker pod, from measured figures.

``python -m bench.worker_footprint --records 200000 --rate 500 --paced-s 30`` ran the orders
pipeline's ``validate`` stage as one pod runs it (`streams run`: a supervisor and one worker
process) and wrote ``bench/results/worker_footprint-20261202T015836Z.json``:

========  ==========================  =================  ==================
phase     load                        RSS, both (MiB)    CPU, worker (cores)
========  ==========================  =================  ==================
idle      joined, no input            122.6              0.002
paced     500 records/s               123.0              0.030
drain     200,000 records, 4,246/s    180.8              0.177
========  ==========================  =================  ==================

(supervisor 51.0 MiB and at most 0.001 cores throughout; 2 CPUs, load average 11.8 from other
work at the end, so the drain rate is the shared machine's, not the worker's ceiling.)

The requests: memory the drain's peak rounded up to 32 MiB, CPU the drain's cores rounded up
to 50 millicores. The memory limit is twice the request (a handler's own data structures come
on top); there is no CPU limit, as throttling a worker stretches its transactions and its
poll loop instead of failing anything. Measure your own stage the same way and pass other
figures through ``KubernetesOptions.resources``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["WORKER_RESOURCES", "Resources"]


@dataclass(frozen=True)
class Resources:
    """Requests (and a memory limit) of one worker container."""

    cpu_millicores: int
    memory_mib: int
    memory_limit_mib: int

    def to_manifest(self) -> dict[str, Any]:
        return {
            "requests": {"cpu": f"{self.cpu_millicores}m", "memory": f"{self.memory_mib}Mi"},
            "limits": {"memory": f"{self.memory_limit_mib}Mi"},
        }


WORKER_RESOURCES = Resources(cpu_millicores=200, memory_mib=192, memory_limit_mib=384)
