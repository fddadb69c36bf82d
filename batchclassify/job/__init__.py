"""The job: the runner that wires producer, queue and workers, and the flow control each request
goes through.
"""
