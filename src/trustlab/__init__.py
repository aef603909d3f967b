"""trustlab: ten research systems on trustworthy and efficient ML, each reproduced against its baselines.

Importing :mod:`trustlab` is cheap; systems load lazily through :data:`trustlab.registry.SYSTEMS`.
"""

__version__ = "0.1.0"
