"""Output: the sinks and what a job writes beside its output (settings, progress, lock, answer
cache), and the readers of both.
"""
