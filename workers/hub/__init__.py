"""Hugging Face Hub suspects: a repo at a pinned commit, read by byte ranges where possible.

The contract (used by `workers.suspects`): `prepare(row)` resolves and pins the repo at the
fetch, `load(row)` gives each check a fresh `verifier.Suspect`, `with_reads` adds what a
check read to its result, and `SuspectChanged` says the
Hub now serves other bytes. Modules, each importing only those above it:
  snapshot.py  revision → commit sha, file listing (huggingface_hub), layout choice
  ranges.py    guarded Range GETs and whole downloads, redirects checked hop by hop
  store.py     this host's cache of one repo@commit (ranges and whole files), read once
  suspect.py   prepare / load for a Suspect row
docs/ingestion.md ("Hugging Face Hub suspects") states the decisions.
"""
from workers.hub.suspect import SuspectChanged, load, prepare, with_reads

__all__ = ["SuspectChanged", "load", "prepare", "with_reads"]
