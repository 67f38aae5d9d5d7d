"""What people see: progress sinks (tqdm bars) and the notebook HTML of results.

Nothing below it (`pollkit.models`, `pollkit.errors`) imports it at module level.
"""
