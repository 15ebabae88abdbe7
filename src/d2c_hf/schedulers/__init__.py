"""Schedulers (diffusers ``SchedulerMixin`` classes): REPA's Euler–Maruyama SDE sampler."""

from .scheduling_flow_match_euler_maruyama import FlowMatchEulerMaruyamaScheduler

__all__ = ["FlowMatchEulerMaruyamaScheduler"]
