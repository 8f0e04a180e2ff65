"""User tools built on the compiler: ``draw`` (pictures of the compiled net) and ``timing``."""
