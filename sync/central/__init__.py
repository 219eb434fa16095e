"""Everything that runs at central: the reference receiver (``receiver``), where it keeps what
it holds (``store``), the versioned schema of that store (``schema``) and the operator's view of
it (``stats``)."""
