"""Pure domain code: no I/O. Event rules, artifact state, counters, time, access."""
