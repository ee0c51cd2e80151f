"""Resource requests of a worker pod, from measured figures.

``python -m bench.worker_footprint --records 200000 --rate 500 --paced-s 30`` ran the orders
pipeline's ``validate`` stage as one pod runs it (`streams run`: a supervisor and one worker
process) and wrote ``bench/results/worker_footprint-20261202T062005Z.json`` (the worker with
its bounded fetch queues, ``streams.config.StageSettings``):

========  ==========================  =================  ==================
phase     load                        RSS, both (MiB)    CPU, worker (cores)
========  ==========================  =================  ==================
idle      joined, no input            125.1              0.002
paced     500 records/s               126.0              0.024
drain     200,000 records, 32,322/s   135.2              0.620
========  ==========================  =================  ==================

(worker 80.2 MiB at its peak, supervisor 55.1 MiB and at most 0.001 cores throughout; 2 CPUs,
load average 7.1 from other work at the end. The run before the queue bounds,
``worker_footprint-20261202T015836Z.json``, drained at 4,246/s on a busier machine: 180.8 MiB,
0.177 cores.)

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


WORKER_RESOURCES = Resources(cpu_millicores=650, memory_mib=160, memory_limit_mib=320)
