"""Pipelines and schedulers (diffusers ``DiffusionPipeline`` / ``SchedulerMixin`` classes).

Saved pipelines record these classes as ``["d2c_hf", <Class>]`` in ``model_index.json`` (:mod:`d2c_hf.remote_code`);
``SiTPipeline.from_pretrained`` maps them to these modules, which importing this package puts in ``sys.modules``.
"""

from .pipeline_sit import SiTPipeline
from .scheduling_sde import FlowMatchEulerMaruyamaScheduler

__all__ = ["FlowMatchEulerMaruyamaScheduler", "SiTPipeline"]
