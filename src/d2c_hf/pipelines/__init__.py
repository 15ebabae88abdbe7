"""Pipelines and schedulers (diffusers ``DiffusionPipeline`` / ``SchedulerMixin`` classes).

Saved pipelines record these classes as ``["d2c_hf", <Class>]`` in ``model_index.json`` (:mod:`d2c_hf.interop.remote_code`);
``SiTPipeline.from_pretrained`` maps them to these modules, which importing this package puts in ``sys.modules``.
"""

from ..schedulers.scheduling_flow_match_euler_maruyama import FlowMatchEulerMaruyamaScheduler
from .sit.pipeline_sit import SiTPipeline

__all__ = ["FlowMatchEulerMaruyamaScheduler", "SiTPipeline"]
