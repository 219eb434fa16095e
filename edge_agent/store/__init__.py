"""The unit's store: one SQLite file behind a single writer (see ``writer``), its schema
(``migrations``), how it is opened (``connect``, ``database``), read by the command line
(``read``), recovered, encrypted and kept within the disk (``recovery``, ``encrypt``, ``key``,
``disk_full``, ``retention``), and the tables the application keeps in it (``encounters``,
``device_facts``)."""
