"""The stages of bench/gpu_check.py, one module each; every stage is ``run(ctx) -> exit code``.

Importing a stage parses no arguments and changes nothing: bench/gpu_check.py builds the
``Context`` (device, sizes, repetitions, where results go) and sets TRITON_INTERPRET for a dry run
before any stage imports triton.
"""
