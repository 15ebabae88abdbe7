"""Pipelines and schedulers (diffusers ``DiffusionPipeline`` / ``SchedulerMixin`` classes).

Importing this package registers both modules in ``sys.modules``, which is what lets
``SiTPipeline.from_pretrained`` resolve the ``d2c_hf`` component classes recorded in ``model_index.json``.
"""

from .pipeline_sit import SiTPipeline
from .scheduling_sde import FlowMatchEulerMaruyamaScheduler

__all__ = ["FlowMatchEulerMaruyamaScheduler", "SiTPipeline"]
