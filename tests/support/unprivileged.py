"""Runs in which file permissions apply, even for root (CI containers run tests as root, who
writes through permissions, so a read-only folder would not be read-only)."""

import os


def as_unprivileged():
    """A subprocess ``preexec_fn``: root ignores file permissions, so drop the two capabilities
    that let it (from the bounding set, so the shiwu exec'd next never gets them) and permissions
    apply as for anyone."""
    if os.geteuid() == 0:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2
        for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
            if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                os._exit(99)  # the test fails on the exit code: no silent root run
