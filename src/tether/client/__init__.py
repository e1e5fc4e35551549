"""I/O adapters over :mod:`tether.protocol`: worker transports and API clients."""
