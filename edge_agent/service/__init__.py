"""The running unit: the supervisor of drivers and sync, systemd notify/watchdog, the unit files
the installer writes, and the demo."""
