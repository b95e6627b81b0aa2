"""
A deterministic simulator of the order replicas: the real protocol core, many
copies in one process, on a simulated clock, network and disk, with every
choice drawn from one seed and every invariant checked after every step.
``python -m tests.sim --help`` says how to run and replay it.
"""
