"""The running stack seen from outside: its state file and the health probes of its parts."""
