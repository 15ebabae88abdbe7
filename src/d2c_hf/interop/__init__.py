"""Interoperability: converting original SiT/REPA checkpoints, and the remote-code files written into saved
pipelines so diffusers can load them without d2c_hf.
"""
