"""Pure functions of the speculative-decoding model: numpy in, numpy out, no I/O."""
