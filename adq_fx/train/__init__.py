"""The training recipe and its command line. Depends on the library, never the reverse."""
