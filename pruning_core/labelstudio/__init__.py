"""Round trip with Label Studio: a review queue out as tasks with suggestions, annotations back as decisions.

``tasks``: the labelling config, tasks and verdicts as plain data (server and file forms share them);
``client``: the HTTP calls; ``roundtrip``: push (idempotent) and pull (one decision per task, majority of
its annotators, re-pulls record nothing new).  No Label Studio package is needed on PruneScope's side.
"""
