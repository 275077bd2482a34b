"""The demo wing: the whole Sailor2 path on the embedded data with a tiny model (`make demo`, `sailor2-jax demo`).

It sits on top of the house: it runs the library and the real commands, and nothing below imports it. `run.py` holds
the stage list, numbering, timing, checks and the final summary; each other module is one stage with one signature
(`TITLE`, `run(ctx) -> StageResult`, `stage.py`); `fixtures.py` builds the small things the demo, the tests and the
benchmarks share (the tiny base checkpoint, the tiny translator, the planted-trouble corpus).
"""
