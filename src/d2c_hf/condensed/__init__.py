"""The product: :class:`~d2c_hf.condensed.dataset.CondensedDataset`, its storage and its dataset card."""
