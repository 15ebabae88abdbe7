"""Training support: REPA's losses, the resumable batch source and the training checkpoints."""
