"""Batches: the scheduler behind `AsyncClient.run` (one heap of next polls, shared
budgets) and the journal that makes a rerun submit and download nothing twice.
"""
