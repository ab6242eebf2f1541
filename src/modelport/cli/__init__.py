"""The command-line interface: one module per command, shared argument groups in _common."""
