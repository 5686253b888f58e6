"""Executors run one stage attempt: `local` as a process group here, `ssh` on a remote host."""
