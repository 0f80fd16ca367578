"""The library behind the entry points (train/train_imagenet.py, test/score.py, tools/*.py): data, checkpoints,
evaluation, devices, the epoch loop, benchmark probes and the launcher. Imports nothing at package level, so that
the framework-free parts (benchmarking, launcher) load without MXNet."""
