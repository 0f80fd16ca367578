"""The distributed launcher: MXNet's own launcher (dmlc_tracker) repaired and supervised, the guard every job
process runs under, and hostfile checks. ``python tools/launch.py`` is its command line."""
