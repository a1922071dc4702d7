"""Where and how work runs: progress and cancel, devices, time budgets, executors, safety guards."""
