"""Pure planning: (spec, status, observed, now) -> (actions, status). No I/O imports allowed here."""
