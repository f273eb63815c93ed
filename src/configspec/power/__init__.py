"""Power meters behind one interface: RAPL, NVML, Jetson, Raspberry Pi, hwmon, replay, estimate."""
