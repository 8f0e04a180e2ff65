"""User tools built on the compiler: ``draw`` (pictures of the compiled net), ``timing``,
and ``trainlog`` / ``plot_log`` (the JSON-lines log of ``netspec train --log``)."""
