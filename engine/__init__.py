"""ACE Companion engine: ACE-Step 1.5 inference (checkpoints, models, samplers, tasks, pipeline, service).

Importing `engine` itself is cheap and torch-free; `engine.request` and `engine.types`
are safe for clients (bridge, GUI). Everything that needs torch lives in submodules.
"""

__version__ = "0.1.0"
