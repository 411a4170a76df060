"""Speed and memory goals, as ratios against a baseline measured in the same run.

Run them with ``make bench`` (or ``python -m benchmarks``). They are not part of
``make test``: timings on a shared machine are noise, ratios within one run are not.
"""
