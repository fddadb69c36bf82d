"""The command line: ``batchclassify run`` and the commands that plan, watch, merge, report on and
export a job's output.
"""
