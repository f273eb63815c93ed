"""The only code that runs hardware: device, alignment and verification sweeps."""
