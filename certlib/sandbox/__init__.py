"""Uploaded models, run and checked out of process: the worker, its pipe, Landlock and seccomp, the archive,
TorchScript and torch.export checks, the operator allow-list, the worker pool."""
