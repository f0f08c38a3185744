"""The method, step by step (METHOD.md): sampling, explanations, segments, critics, the consistency check,
the RRR penalty and training, evaluation, the pipeline that chains them, their settings, and the checks that
qualify the method (qualify.py) and the critic (spotcheck.py)."""
