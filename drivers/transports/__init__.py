"""Transports: the only modules that touch ports, sockets and radios."""
