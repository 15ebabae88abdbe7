"""The example scripts, shipped in the package as ``d2c_hf.examples`` (see setup.cfg): run them with
``accelerate launch examples/train_sit.py`` from a checkout, or ``accelerate launch -m d2c_hf.examples.train_sit``
from an installed package."""
