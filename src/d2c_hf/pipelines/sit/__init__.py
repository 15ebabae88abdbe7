"""The SiT pipeline (``SiTPipeline``) and its model card."""
