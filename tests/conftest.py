"""Settings shared by every test module.

Hypothesis checks what the code computes, not how fast: its per-example deadline would
only measure the load of the (2-core, shared) machine the tests run on, so it is off.
"""
from hypothesis import settings

settings.register_profile("ctlwire", deadline=None)
settings.load_profile("ctlwire")
